import Foundation
import LabCore
import Testing

@Suite("Lab files")
struct LabFileTests {
    static let minimal = """
        name: t
        guests:
          linux: {os: linux, kernel: vmlinuz}

        """

    // MARK: Good files

    @Test func emulatedExampleLab() throws {
        let lab = try Lab.load(path: LabFixtures.emulatedLab)
        #expect(lab.name == "emulated-scsi")
        #expect(lab.devices.map(\.name) == ["scsi-am", "scsi-lsi"])
        #expect(lab.devices.map(\.attach) == [.hotplug, .hotplug])
        #expect(lab.devices.compactMap(\.emulated?.driver) == ["am53c974", "lsi53c895a"])
        let disk = try #require(lab.devices[0].emulated?.disks.first)
        #expect(disk.image == LabFixtures.repositoryRoot + "/images/out/scsi-target.qcow2")
        #expect(disk.id == "scsi-am-disk0")
        #expect(disk.formatNodeName == "scsi-am-disk0-fmt")
        #expect(disk.format == "qcow2")
        let guest = try #require(lab.guest(named: "linux"))
        #expect(guest.os == .linux)
        #expect(guest.kernel == LabFixtures.repositoryRoot + "/images/out/linux/vmlinuz")
        #expect(guest.ready == "qlab-guest-ready")
        #expect(guest.prompt == "# ")
        #expect(guest.bootTimeout == .seconds(120))
        #expect(guest.effectiveRescan == "qlab-scsi-scan -w 20 -n 2")
        #expect(lab.tests.map(\.name) == ["find-target", "write-reverted"])
        #expect(lab.tests[0].expect == ["qlab-target-check: ok"])
        #expect(lab.tests[0].timeout == .seconds(60))
        #expect(lab.strategy == .snapshot)
        let machine = lab.machineSettings(for: guest)
        #expect(machine.type == "q35")
        #expect(machine.memory == .mebibytes(256))
        #expect(machine.accel == .auto)
        #expect(lab.effectiveStrategy(for: guest) == .snapshot)
    }

    @Test func benchExampleLab() throws {
        let lab = try Lab.load(path: LabFixtures.benchLab)
        #expect(lab.name == "aha2930")
        #expect(lab.guests.map(\.name) == ["freebsd", "netbsd", "openbsd", "linux", "macos"])
        let card = try #require(lab.device(named: "scsi0")?.passthrough)
        #expect(card.host == .address(PCIAddress("0000:03:05.0")!))
        #expect(card.rombar == false)
        let scsi0 = try #require(lab.device(named: "scsi0"))
        // Hotplug where the OS can take it, boot (and reset) where it cannot.
        for (name, attach, strategy) in [
            ("freebsd", Attach.hotplug, Strategy.snapshot), ("linux", .hotplug, .snapshot),
            ("netbsd", .boot, .reset), ("openbsd", .boot, .reset), ("macos", .boot, .reset),
        ] {
            let guest = try #require(lab.guest(named: name))
            #expect(lab.effectiveAttach(of: scsi0, for: guest) == attach, "\(name)")
            #expect(lab.effectiveStrategy(for: guest) == strategy, "\(name)")
            #expect(lab.hotplugDevices(for: guest).map(\.name) == (attach == .hotplug ? ["scsi0"] : []), "\(name)")
        }
        let macos = try #require(lab.guest(named: "macos"))
        #expect(lab.machineSettings(for: macos).memory == .mebibytes(2048))
        #expect(macos.effectiveFirmware == .uefi)
        #expect(macos.login == GuestLogin(user: "root", password: "qlab"))
        #expect(lab.test(named: "camcontrol")?.guests == ["freebsd"])
        #expect(lab.test(named: "probe")?.timeout == .seconds(120))
    }

    @Test func pathsResolveAgainstTheLabFile() throws {
        let dir = try LabTempDirectory()
        defer { dir.remove() }
        try dir.write("images/vmlinuz", "k")
        let lab = try LabFixtures.load(
            """
            name: t
            guests:
              g: {os: linux, kernel: ../images/vmlinuz, disk: "./../images/base image,v=1.qcow2"}
            """, in: dir, file: "labs/t.yaml")
        let guest = try #require(lab.guest(named: "g"))
        #expect(guest.kernel == dir.path + "/images/vmlinuz")
        #expect(guest.disk == dir.path + "/images/base image,v=1.qcow2")
        // The disk does not exist: recorded with its key, not an error until asked.
        #expect(lab.missingFiles.map(\.path) == [dir.path + "/images/base image,v=1.qcow2"])
        #expect(lab.missingFiles.first?.error.keyPath == "guests.g.disk")
        #expect(lab.missingFiles.first?.error.line == 3)
        #expect(throws: LabFileError.self) { try lab.checkFiles(guest: "g") }
        do {
            _ = try Lab.load(path: dir.path + "/labs/t.yaml", requireFiles: true)
            Issue.record("requireFiles accepted a missing disk")
        } catch {
            #expect(error.keyPath == "guests.g.disk")
            #expect(error.message.contains("does not exist"))
        }
    }

    @Test func defaultsAndShortForms() throws {
        let dir = try LabTempDirectory()
        defer { dir.remove() }
        let lab = try LabFixtures.load(
            """
            guests:
              dos: {os: dos, disk: dos.img}
            devices:
              ctl:
                emulated: {driver: megasas, disks: [a.raw, {image: b.qcow2, id: second, readonly: yes}]}
            tests:
              quick: echo hi
              list: {run: "true", expect: [a, b], status: 3, timeout: 1m30s}
            """, in: dir, file: "my-lab.yaml")
        #expect(lab.name == "my-lab")
        #expect(lab.devices[0].attach == .boot)
        let disks = try #require(lab.devices[0].emulated?.disks)
        #expect(disks.map(\.id) == ["ctl-disk0", "second"])
        #expect(disks.map(\.format) == ["raw", "qcow2"])
        #expect(disks.map(\.readonly) == [false, true])
        #expect(lab.tests[0].run == "echo hi")
        #expect(lab.tests[1].expect == ["a", "b"])
        #expect(lab.tests[1].status == 3)
        #expect(lab.tests[1].timeout == .seconds(90))
        let dos = try #require(lab.guest(named: "dos"))
        let machine = lab.machineSettings(for: dos)
        #expect(machine.type == "pc")
        #expect(machine.memory == .mebibytes(64))
        #expect(dos.effectiveDiskInterface == .ide)
    }

    @Test func sizesAndDurations() {
        #expect(ByteSize(parsing: "512M") == .mebibytes(512))
        #expect(ByteSize(parsing: "1G") == .mebibytes(1024))
        #expect(ByteSize(parsing: "1.5G") == .mebibytes(1536))
        #expect(ByteSize(parsing: "64MiB") == .mebibytes(64))
        #expect(ByteSize(parsing: "256") == .mebibytes(256))
        #expect(ByteSize(parsing: "lots") == nil)
        #expect(ByteSize(parsing: "-1G") == nil)
        #expect(LabDuration.parse("60s") == .seconds(60))
        #expect(LabDuration.parse("2m") == .seconds(120))
        #expect(LabDuration.parse("1h") == .seconds(3600))
        #expect(LabDuration.parse("500ms") == .milliseconds(500))
        #expect(LabDuration.parse("1m30s") == .seconds(90))
        #expect(LabDuration.parse("45") == .seconds(45))
        #expect(LabDuration.parse("soon") == nil)
        #expect(LabDuration.parse("5 parsecs") == nil)
        #expect(LabDuration.format(.seconds(90)) == "1m30s")
    }

    // MARK: Bad files: each names the line and the key

    struct BadCase: CustomStringConvertible, Sendable {
        var title: String
        var yaml: String
        var line: Int
        var keyPath: String
        var message: String
        var description: String { title }
    }

    static let badCases: [BadCase] = [
        BadCase(title: "unknown top-level key", yaml: "name: t\ngusts: {}\n", line: 2, keyPath: "gusts", message: "did you mean 'guests'?"),
        BadCase(title: "bad lab name", yaml: "name: My_Lab\nguests: {g: {os: linux, kernel: k}}\n", line: 1, keyPath: "name", message: "not a valid lab name"),
        BadCase(
            title: "bad host address",
            yaml: "name: t\ndevices:\n  scsi0:\n    passthrough: {host: \"03:05\"}\nguests: {g: {os: linux, kernel: k}}\n",
            line: 4, keyPath: "devices.scsi0.passthrough.host", message: "not a PCI address"),
        BadCase(
            title: "bad ids",
            yaml: "name: t\ndevices:\n  scsi0:\n    passthrough:\n      ids: 9004-5078\nguests: {g: {os: linux, kernel: k}}\n",
            line: 5, keyPath: "devices.scsi0.passthrough.ids", message: "vendor:device"),
        BadCase(
            title: "passthrough and emulated",
            yaml: "name: t\ndevices:\n  d:\n    passthrough: {host: \"0000:03:05.0\"}\n    emulated: {driver: am53c974}\nguests: {g: {os: linux, kernel: k}}\n",
            line: 5, keyPath: "devices.d.emulated", message: "either passthrough or emulated"),
        BadCase(
            title: "neither passthrough nor emulated",
            yaml: "name: t\ndevices:\n  d:\n    attach: boot\nguests: {g: {os: linux, kernel: k}}\n",
            line: 3, keyPath: "devices.d", message: "say what the device is"),
        BadCase(
            title: "unknown driver",
            yaml: "name: t\ndevices:\n  d:\n    emulated: {driver: lsi53c895}\nguests: {g: {os: linux, kernel: k}}\n",
            line: 4, keyPath: "devices.d.emulated.driver", message: "did you mean 'lsi53c895a'?"),
        BadCase(
            title: "misspelt attach value",
            yaml: "name: t\ndevices:\n  d:\n    emulated: {driver: am53c974}\n    attach: hotpug\nguests: {g: {os: linux, kernel: k}}\n",
            line: 5, keyPath: "devices.d.attach", message: "did you mean 'hotplug'?"),
        BadCase(
            title: "misspelt device key",
            yaml: "name: t\ndevices:\n  d:\n    emulated: {driver: am53c974}\n    atach: boot\nguests: {g: {os: linux, kernel: k}}\n",
            line: 5, keyPath: "devices.d.atach", message: "did you mean 'attach'?"),
        BadCase(
            title: "device name not a QEMU id",
            yaml: "name: t\ndevices:\n  0card:\n    emulated: {driver: am53c974}\nguests: {g: {os: linux, kernel: k}}\n",
            line: 3, keyPath: "devices.0card", message: "cannot be a QEMU device id"),
        BadCase(
            title: "reserved device name",
            yaml: "name: t\ndevices:\n  qlab-x:\n    emulated: {driver: am53c974}\nguests: {g: {os: linux, kernel: k}}\n",
            line: 3, keyPath: "devices.qlab-x", message: "reserved"),
        BadCase(
            title: "disk id clashes with a device",
            yaml: "name: t\ndevices:\n  a:\n    emulated: {driver: am53c974, disks: [{image: x.qcow2, id: b}]}\n  b:\n    emulated: {driver: am53c974}\nguests: {g: {os: linux, kernel: k}}\n",
            line: 5, keyPath: "devices.b", message: "already the id of disk 0 of a"),
        BadCase(
            title: "bad addr", yaml: "name: t\ndevices:\n  d:\n    emulated: {driver: am53c974}\n    addr: 0x20\nguests: {g: {os: linux, kernel: k}}\n",
            line: 5, keyPath: "devices.d.addr", message: "not a PCI slot"),
        BadCase(title: "bad memory", yaml: "name: t\nmachine: {memory: lots}\nguests: {g: {os: linux, kernel: k}}\n", line: 2, keyPath: "machine.memory", message: "not a size"),
        BadCase(title: "bad machine type", yaml: "name: t\nmachine:\n  type: virt\nguests: {g: {os: linux, kernel: k}}\n", line: 3, keyPath: "machine.type", message: "use q35 or pc"),
        BadCase(title: "bad accel", yaml: "name: t\nmachine: {accel: hvf}\nguests: {g: {os: linux, kernel: k}}\n", line: 2, keyPath: "machine.accel", message: "auto|kvm|tcg"),
        BadCase(title: "smp out of range", yaml: "name: t\nmachine: {smp: 0}\nguests: {g: {os: linux, kernel: k}}\n", line: 2, keyPath: "machine.smp", message: "out of range"),
        BadCase(title: "missing os", yaml: "name: t\nguests:\n  g:\n    kernel: k\n", line: 3, keyPath: "guests.g.os", message: "missing"),
        BadCase(title: "unknown os", yaml: "name: t\nguests:\n  g:\n    os: linus\n    kernel: k\n", line: 4, keyPath: "guests.g.os", message: "did you mean 'linux'?"),
        BadCase(title: "nothing to boot", yaml: "name: t\nguests:\n  g:\n    os: linux\n", line: 3, keyPath: "guests.g", message: "nothing to boot"),
        BadCase(title: "no guests", yaml: "name: t\n", line: 1, keyPath: "guests", message: "at least one guest"),
        BadCase(title: "guests as a list", yaml: "name: t\nguests:\n  - linux\n", line: 3, keyPath: "guests", message: "expected a mapping"),
        BadCase(title: "bad timeout", yaml: "name: t\nguests: {g: {os: linux, kernel: k}}\ntests:\n  t1: {run: ls, timeout: soon}\n", line: 4, keyPath: "tests.t1.timeout", message: "not a duration"),
        BadCase(title: "test without run", yaml: "name: t\nguests: {g: {os: linux, kernel: k}}\ntests:\n  t1: {expect: x}\n", line: 4, keyPath: "tests.t1.run", message: "missing"),
        BadCase(
            title: "test for an unknown guest", yaml: "name: t\nguests: {gg: {os: linux, kernel: k}}\ntests:\n  t1:\n    run: ls\n    guests: [gg, gx]\n",
            line: 6, keyPath: "tests.t1.guests[1]", message: "no guest 'gx'"),
        BadCase(title: "bad strategy", yaml: "name: t\nguests: {g: {os: linux, kernel: k}}\nstrategy: revert\n", line: 3, keyPath: "strategy", message: "snapshot|reset"),
        BadCase(title: "qemu_args not a list", yaml: "name: t\nguests: {g: {os: linux, kernel: k}}\nqemu_args: {a: b}\n", line: 3, keyPath: "qemu_args", message: "expected a list"),
        BadCase(title: "duplicate key", yaml: "name: t\nname: u\nguests: {g: {os: linux, kernel: k}}\n", line: 2, keyPath: "", message: "duplicate key 'name'"),
        BadCase(
            title: "duplicate nested key", yaml: "name: t\nguests:\n  g:\n    os: linux\n    kernel: k\n    os: freebsd\n", line: 6, keyPath: "",
            message: "duplicate key 'os'"),
        BadCase(
            title: "placement checked at load",
            yaml: "name: t\ndevices:\n  a:\n    emulated: {driver: am53c974}\n    bus: pcie.0\n    attach: hotplug\nguests: {g: {os: linux, kernel: k}}\n",
            line: 4, keyPath: "devices.a.bus", message: "takes no hotplug"),
        BadCase(title: "YAML syntax", yaml: "name: t\nguests: {g: {os: linux, kernel: k}\n", line: 3, keyPath: "", message: "YAML syntax"),
        BadCase(title: "empty file", yaml: "\n", line: 1, keyPath: "", message: "empty"),
        BadCase(title: "bios with uefi", yaml: "name: t\nguests:\n  w:\n    os: windows\n    disk: w.qcow2\n    bios: b.bin\n", line: 4, keyPath: "guests.w", message: "bios: is for BIOS firmware"),
        BadCase(
            title: "properties may not set qlab's keys",
            yaml: "name: t\ndevices:\n  d:\n    emulated: {driver: am53c974}\n    properties: {bus: pci.0}\nguests: {g: {os: linux, kernel: k}}\n",
            line: 5, keyPath: "devices.d.properties.bus", message: "set by qlab"),
    ]

    @Test(arguments: badCases)
    func badFileNamesLineAndKey(_ bad: BadCase) throws {
        let error = try #require(try LabFixtures.loadError(bad.yaml), "accepted: \(bad.title)")
        #expect(error.line == bad.line, "\(error)")
        #expect(error.keyPath == bad.keyPath, "\(error)")
        #expect(error.message.contains(bad.message), "\(error)")
        #expect(error.file.hasSuffix("lab.yaml"))
        // FILE:LINE:COL: KEY: message
        let prefix = "\(error.file):\(bad.line):\(error.column ?? 0): " + (bad.keyPath.isEmpty ? "" : bad.keyPath + ": ")
        #expect(error.description.hasPrefix(prefix), "\(error)")
    }

    @Test func unreadableAndMissingLabFile() throws {
        do {
            _ = try Lab.load(path: "/nonexistent/qlab/lab.yaml")
            Issue.record("loaded a file that does not exist")
        } catch {
            #expect(error.description == "/nonexistent/qlab/lab.yaml: cannot read the lab file: No such file or directory")
        }
    }

    @Test func unknownGuestSuggestsOne() throws {
        let dir = try LabTempDirectory()
        defer { dir.remove() }
        let lab = try LabFixtures.load(Self.minimal, in: dir)
        #expect(throws: LabFileError.self) { try lab.selectGuest("linx") }
        do { _ = try lab.selectGuest("linx") } catch { #expect(error.message.contains("did you mean 'linux'?")) }
        #expect(try lab.selectGuest(nil).name == "linux")
    }

    /// Mangled lab files never crash the loader: each either loads or fails with
    /// an error that points inside the file.
    @Test func mangledFilesFailCleanly() throws {
        let original = try String(contentsOfFile: LabFixtures.benchLab, encoding: .utf8)
        let lineCount = original.split(separator: "\n", omittingEmptySubsequences: false).count
        var generator = SplitMix(seed: 0x9004_5078)
        let alphabet = Array(" \n:{}[],-#\"'x0.&*!|>")
        var failures = 0
        for _ in 0..<400 {
            var chars = Array(original)
            for _ in 0..<Int(generator.next() % 4 + 1) {
                let at = Int(generator.next() % UInt64(chars.count))
                switch generator.next() % 3 {
                case 0: chars.remove(at: at)
                case 1: chars.insert(alphabet[Int(generator.next() % UInt64(alphabet.count))], at: at)
                default: chars[at] = alphabet[Int(generator.next() % UInt64(alphabet.count))]
                }
            }
            do {
                _ = try Lab.parse(yaml: String(chars), file: LabFixtures.benchLab)
            } catch {
                failures += 1
                #expect(error.file == LabFixtures.benchLab)
                if let line = error.line { #expect(line >= 1 && line <= lineCount + 2, "\(error)") }
                #expect(!error.message.isEmpty)
            }
        }
        #expect(failures > 100)  // the mangling does break most files
    }
}

/// A small deterministic PRNG for reproducible mangling.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
