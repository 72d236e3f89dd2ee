import Foundation
import LabCore
import QMP
import Testing

@Suite("QEMU command lines")
struct CommandLineTests {
    // MARK: Escaping and quoting

    @Test func commasAreDoubledInOptionValues() {
        #expect(QEMUOptions.escape("a,b") == "a,,b")
        #expect(QEMUOptions.escape("/labs/my lab,v=2/q.sock") == "/labs/my lab,,v=2/q.sock")
        #expect(QEMUOptions.escape("plain") == "plain")
        let option = QEMUOptions.join("socket", [("id", .string("m")), ("path", .string("/a b,c=d/,,x")), ("server", .bool(true))])
        #expect(option == "socket,id=m,path=/a b,,c=d/,,,,x,server=on")
        // Splitting undoes the escape: the value comes back whole.
        #expect(QEMUOptions.split(option) == ["socket", "id=m", "path=/a b,c=d/,,x", "server=on"])
    }

    @Test func valuesKeepTheirTypesForQMP() {
        #expect(QEMUValue.inferred("on") == .bool(true))
        #expect(QEMUValue.inferred("false") == .bool(false))
        #expect(QEMUValue.inferred("16") == .int(16))
        #expect(QEMUValue.inferred("0x9004") == .int(0x9004))
        #expect(QEMUValue.inferred("0xzz") == .string("0xzz"))
        #expect(QEMUValue.inferred("007") == .string("007"))
        #expect(QEMUValue.bool(true).description == "on")
        let device = QEMUDeviceSpec(driver: "vfio-pci", id: "scsi0", properties: [("host", .string("0000:03:05.0")), ("rombar", .int(0)), ("x-no-kvm-intx", .bool(true))])
        #expect(device.optionValue == "vfio-pci,id=scsi0,host=0000:03:05.0,rombar=0,x-no-kvm-intx=on")
        #expect(device.deviceAddArguments == ["driver": "vfio-pci", "id": "scsi0", "host": "0000:03:05.0", "rombar": 0, "x-no-kvm-intx": true])
    }

    @Test func shellQuotingRoundTripsThroughAShell() throws {
        let words = ["qemu", "-append", "console=ttyS0 quiet", "it's", "", "a\"b", "$HOME", "x,y=z", "back\\slash", "new\nline", "tab\there", "ü"]
        #expect(ShellQuoting.quote("plain-word_1.2:3,x=y/@%+") == "plain-word_1.2:3,x=y/@%+")
        #expect(ShellQuoting.quote("a b") == "'a b'")
        #expect(ShellQuoting.quote("it's") == "'it'\\''s'")
        #expect(ShellQuoting.quote("") == "''")
        for multiline in [false, true] {
            let line = ShellQuoting.join(words, multiline: multiline)
            // The shell reads each word back unchanged, one per NUL-terminated record.
            let result = try LabFixtures.run(["sh", "-c", "printf '%s\\0' " + ShellQuoting.join(Array(words.dropFirst()), multiline: multiline)])
            #expect(result.status == 0)
            #expect(result.output.split(separator: "\0", omittingEmptySubsequences: false).dropLast().map(String.init) == Array(words.dropFirst()))
            #expect(line.contains("'console=ttyS0 quiet'"))
        }
    }

    // MARK: Accel decision against fake /dev and /sys

    @Test func accelDecisionAgainstFakeRoots() throws {
        let root = try LabTempDirectory("accel")
        defer { root.remove() }
        let dev = root.path + "/dev", sys = root.path + "/sys"
        try FileManager.default.createDirectory(atPath: dev, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: sys + "/module/kvm", withIntermediateDirectories: true)

        var decision = AccelDecision.decide(.auto, devRoot: dev, sysRoot: sys)
        #expect(decision.accelerator == .tcg)
        #expect(decision.reason.contains("does not exist"))

        try root.write("dev/kvm", "")
        decision = AccelDecision.decide(.auto, devRoot: dev, sysRoot: sys)
        #expect(decision.accelerator == .kvm)

        try FileManager.default.createDirectory(atPath: sys + "/module/kvm_pvm", withIntermediateDirectories: true)
        decision = AccelDecision.decide(.auto, devRoot: dev, sysRoot: sys)
        #expect(decision.accelerator == .tcg)
        #expect(decision.reason.contains("kvm_pvm"))

        // Asked for explicitly: taken as written, with the warning in the reason.
        decision = AccelDecision.decide(.kvm, devRoot: dev, sysRoot: sys)
        #expect(decision.accelerator == .kvm)
        #expect(decision.reason.contains("kvm_pvm"))
        #expect(AccelDecision.decide(.tcg, devRoot: dev, sysRoot: sys).accelerator == .tcg)

        if getuid() != 0 {
            // Not accessible (root can open anything, so only checked as a user).
            try FileManager.default.removeItem(atPath: sys + "/module/kvm_pvm")
            try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: dev + "/kvm")
            decision = AccelDecision.decide(.auto, devRoot: dev, sysRoot: sys)
            #expect(decision.accelerator == .tcg)
            #expect(decision.reason.contains("not readable and writable"))
        }
    }

    // MARK: Placement

    static func devices(_ yaml: String) throws -> [LabDevice] {
        let dir = try LabTempDirectory()
        defer { dir.remove() }
        return try LabFixtures.load("name: t\nguests: {g: {os: linux, kernel: k}}\ndevices:\n" + yaml, in: dir).devices
    }

    @Test func q35PutsCardsBehindAPCIePCIBridge() throws {
        let devices = try Self.devices(
            """
              a: {emulated: {driver: am53c974}, attach: hotplug}
              b: {emulated: {driver: lsi53c895a}, addr: "0x1"}
              c: {passthrough: {host: "0000:03:05.0"}}
              d: {emulated: {driver: megasas}, bus: pcie.0, addr: "0x10"}
              e: {emulated: {driver: megasas}, bus: my-bridge}
            """)
        let plan = try DevicePlacement.plan(devices: devices, machineType: "q35")
        #expect(plan.bridges.map(\.optionValue) == ["pcie-pci-bridge,id=qlab-pcibr0,bus=pcie.0,addr=0x5"])
        #expect(plan.placement(of: "b") == PCIPlacement(bus: "qlab-pcibr0", addr: PCISlotAddress(slot: 1)))
        #expect(plan.placement(of: "a") == PCIPlacement(bus: "qlab-pcibr0", addr: PCISlotAddress(slot: 2)))
        #expect(plan.placement(of: "c") == PCIPlacement(bus: "qlab-pcibr0", addr: PCISlotAddress(slot: 3)))
        #expect(plan.placement(of: "d") == PCIPlacement(bus: "pcie.0", addr: PCISlotAddress(slot: 0x10)))
        #expect(plan.placement(of: "e") == PCIPlacement(bus: "my-bridge", addr: nil))
        #expect(plan.guestDisk == PCIPlacement(bus: "pcie.0", addr: PCISlotAddress(slot: 3)))
    }

    @Test func pcPutsCardsOnTheRootBus() throws {
        let devices = try Self.devices("  a: {emulated: {driver: am53c974}}\n  b: {emulated: {driver: am53c974}, addr: \"0x6\"}\n  c: {emulated: {driver: am53c974}}\n")
        let plan = try DevicePlacement.plan(devices: devices, machineType: "pc-i440fx-7.2")
        #expect(plan.bridges.isEmpty)
        #expect(plan.placement(of: "a") == PCIPlacement(bus: "pci.0", addr: PCISlotAddress(slot: 5)))
        #expect(plan.placement(of: "b") == PCIPlacement(bus: "pci.0", addr: PCISlotAddress(slot: 6)))
        #expect(plan.placement(of: "c") == PCIPlacement(bus: "pci.0", addr: PCISlotAddress(slot: 7)))
    }

    @Test func placementConflictsNameTheDevice() throws {
        // Checked when the lab file is loaded, for every machine type its guests use.
        let head = "name: t\nguests: {g: {os: linux, kernel: k}, d: {os: dos, disk: d.img}}\ndevices:\n"
        let twice = try #require(try LabFixtures.loadError(head + "  a: {emulated: {driver: am53c974}, addr: \"0x2\"}\n  b:\n    emulated: {driver: am53c974}\n    addr: \"0x2\"\n"))
        #expect(twice.keyPath == "devices.b.addr")
        #expect(twice.line == 6)
        #expect(twice.message.contains("already given to 'a'"))
        // pci.0 slot 1 is PIIX3 on the DOS guest's pc machine.
        let reserved = try #require(try LabFixtures.loadError(head + "  a: {emulated: {driver: am53c974}, bus: pci.0, addr: \"0x1\"}\n"))
        #expect(reserved.keyPath == "devices.a.addr")
        #expect(reserved.message.contains("reserved"))

        // The plan itself: hotplug onto pcie.0 is refused on q35, accepted onto pci.0 on pc.
        var card = LabDevice(name: "a", kind: .emulated(EmulatedController(driver: "am53c974")), attach: .hotplug, bus: "pcie.0")
        do {
            _ = try DevicePlacement.plan(devices: [card], machineType: "q35")
            Issue.record("hotplug on pcie.0 accepted")
        } catch {
            #expect(error.message.contains("does not support hotplugging"))
        }
        card.bus = "pci.0"
        #expect(try DevicePlacement.plan(devices: [card], machineType: "pc").placement(of: "a") == PCIPlacement(bus: "pci.0", addr: nil))
        #expect(throws: LabFileError.self) { try DevicePlacement.plan(devices: [card], machineType: "virt") }
    }

    // MARK: Command lines of the example labs

    static func runtime(for lab: Lab, guest: String, accel: AccelDecision = LabFixtures.tcg, root: String = "/run/qlab", state: String = "/var/lib/qlab") throws -> QEMURuntime {
        QEMURuntime.standard(lab: lab, guest: try lab.selectGuest(guest), runtimeDirectory: root, stateDirectory: state, accel: accel)
    }

    @Test func emulatedLabCommandLine() throws {
        let lab = try Lab.load(path: LabFixtures.emulatedLab)
        let commandLine = try QEMUCommandLine.build(lab: lab, guest: "linux", runtime: try Self.runtime(for: lab, guest: "linux"))
        let args = commandLine.arguments
        let value = { (option: String) in LabFixtures.value(after: option, in: args) }
        #expect(commandLine.executable == "qemu-system-x86_64")
        #expect(value("-name") == ["emulated-scsi,process=qlab-emulated-scsi"])
        #expect(value("-machine") == ["q35,accel=tcg"])
        #expect(value("-cpu") == ["max"])
        #expect(value("-m") == ["256M"])
        #expect(value("-smp") == ["1"])
        #expect(args.contains("-nodefaults"))
        #expect(value("-display") == ["none"])
        #expect(!args.contains("-S"))
        #expect(value("-chardev") == [
            "socket,id=qlab-qmp,path=/run/qlab/emulated-scsi/qmp.sock,server=on,wait=off",
            "socket,id=qlab-qmp-supervisor,path=/run/qlab/emulated-scsi/supervisor.sock,server=on,wait=off",
            "socket,id=qlab-console,path=/run/qlab/emulated-scsi/console.sock,server=on,wait=off,logfile=/var/lib/qlab/emulated-scsi/linux/console.log,logappend=on",
        ])
        #expect(value("-mon") == ["chardev=qlab-qmp,mode=control", "chardev=qlab-qmp-supervisor,mode=control"])
        #expect(value("-serial") == ["chardev:qlab-console"])
        #expect(value("-pidfile") == ["/run/qlab/emulated-scsi/qemu.pid"])
        #expect(value("-kernel") == [LabFixtures.repositoryRoot + "/images/out/linux/vmlinuz"])
        #expect(value("-initrd") == [LabFixtures.repositoryRoot + "/images/out/linux/initrd.img"])
        #expect(value("-append") == ["console=ttyS0 quiet panic=-1"])
        #expect(value("-blockdev") == [
            "driver=file,node-name=qlab-disk-file,filename=/var/lib/qlab/emulated-scsi/linux/disk.qcow2",
            "driver=qcow2,node-name=qlab-disk-fmt,file=qlab-disk-file",
        ])
        // The linux profile's pvpanic device (QEMU only reports a panic), the bridge for the
        // hotplugged controllers, and the guest disk; the controllers themselves are
        // hotplugged, not on the command line.
        #expect(value("-action") == ["panic=none"])
        #expect(value("-device") == [
            "pvpanic,id=qlab-pvpanic",
            "pcie-pci-bridge,id=qlab-pcibr0,bus=pcie.0,addr=0x5",
            "virtio-blk-pci,id=qlab-disk,drive=qlab-disk-fmt,bus=pcie.0,addr=0x3,bootindex=1",
        ])
        // Under KVM the CPU is the host's.
        let kvm = try QEMUCommandLine.build(lab: lab, guest: nil, runtime: try Self.runtime(for: lab, guest: "linux", accel: LabFixtures.kvm))
        #expect(LabFixtures.value(after: "-cpu", in: kvm.arguments) == ["host"])
        #expect(LabFixtures.value(after: "-machine", in: kvm.arguments) == ["q35,accel=kvm"])
    }

    @Test func emulatedLabHotplugAttachments() throws {
        let lab = try Lab.load(path: LabFixtures.emulatedLab)
        let guest = try lab.selectGuest("linux")
        let attachment = try lab.attachment(of: "scsi-am", for: guest, diskOverlays: ["scsi-am-disk0": "/var/lib/qlab/x/scsi-am-disk0.qcow2"])
        #expect(attachment.controllerID == "scsi-am")
        #expect(attachment.blockdevs.map(\.blockdevAddArguments) == [
            ["driver": "file", "node-name": "scsi-am-disk0-file", "filename": "/var/lib/qlab/x/scsi-am-disk0.qcow2"],
            ["driver": "qcow2", "node-name": "scsi-am-disk0-fmt", "file": "scsi-am-disk0-file"],
        ])
        #expect(attachment.devices.map(\.deviceAddArguments) == [
            ["driver": "am53c974", "id": "scsi-am", "bus": "qlab-pcibr0", "addr": "0x1"],
            ["driver": "scsi-hd", "id": "scsi-am-disk0", "drive": "scsi-am-disk0-fmt", "bus": "scsi-am.0"],
        ])
        // Without an overlay the base image is opened read-only, never written.
        let bare = try lab.attachment(of: "scsi-lsi", for: guest)
        #expect(bare.commandLineArguments == [
            "-blockdev", "driver=file,node-name=scsi-lsi-disk0-file,filename=\(LabFixtures.repositoryRoot)/images/out/scsi-target.qcow2,read-only=on",
            "-blockdev", "driver=qcow2,node-name=scsi-lsi-disk0-fmt,file=scsi-lsi-disk0-file,read-only=on",
            "-device", "lsi53c895a,id=scsi-lsi,bus=qlab-pcibr0,addr=0x2",
            "-device", "scsi-hd,id=scsi-lsi-disk0,drive=scsi-lsi-disk0-fmt,bus=scsi-lsi.0",
        ])
        #expect(throws: QEMUCommandLineError.self) { try lab.attachment(of: "scsi-amm", for: guest) }
    }

    @Test func benchLabCommandLines() throws {
        let lab = try Lab.load(path: LabFixtures.benchLab)
        let vfio = "vfio-pci,id=scsi0,host=0000:03:05.0,bus=qlab-pcibr0,addr=0x1,rombar=0"
        // FreeBSD hotplugs the card: not on the command line, but the bridge is.
        let freebsd = try QEMUCommandLine.build(lab: lab, guest: "freebsd", runtime: try Self.runtime(for: lab, guest: "freebsd"))
        let freebsdDevices = LabFixtures.value(after: "-device", in: freebsd.arguments)
        #expect(!freebsdDevices.contains(vfio))
        #expect(!freebsdDevices.contains { $0.hasPrefix("pvpanic") }, "only the linux profile has the pvpanic device")
        #expect(freebsdDevices.contains("pcie-pci-bridge,id=qlab-pcibr0,bus=pcie.0,addr=0x5"))
        #expect(freebsdDevices.contains("ide-hd,id=qlab-disk,drive=qlab-disk-fmt,bus=ide.0,bootindex=1"))
        #expect(LabFixtures.value(after: "-m", in: freebsd.arguments) == ["1024M"])
        #expect(LabFixtures.value(after: "-smp", in: freebsd.arguments) == ["2"])
        #expect(!freebsd.arguments.contains("-kernel"))
        #expect(try lab.attachment(of: "scsi0", for: lab.selectGuest("freebsd")).devices.map(\.optionValue) == [vfio])

        // NetBSD and OpenBSD cannot hotplug: the card is attached at boot, in the same slot.
        for name in ["netbsd", "openbsd"] {
            let commandLine = try QEMUCommandLine.build(lab: lab, guest: name, runtime: try Self.runtime(for: lab, guest: name))
            #expect(LabFixtures.value(after: "-device", in: commandLine.arguments).contains(vfio), "\(name)")
        }

        // Mac OS X: UEFI with a qcow2 variable store, a Penryn CPU, the SMC, the card at boot.
        let macos = try QEMUCommandLine.build(lab: lab, guest: "macos", runtime: try Self.runtime(for: lab, guest: "macos"))
        #expect(LabFixtures.value(after: "-drive", in: macos.arguments) == [
            "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd",
            "if=pflash,format=qcow2,unit=1,file=/var/lib/qlab/aha2930/macos/efivars.qcow2",
        ])
        #expect(LabFixtures.value(after: "-cpu", in: macos.arguments).first?.hasPrefix("Penryn,") == true)
        #expect(LabFixtures.value(after: "-m", in: macos.arguments) == ["2048M"])
        let macDevices = LabFixtures.value(after: "-device", in: macos.arguments)
        #expect(macDevices.contains(vfio))
        #expect(macDevices.last?.hasPrefix("isa-applesmc,osk=") == true)

        // Linux: direct kernel boot, the card hotplugged.
        let linux = try QEMUCommandLine.build(lab: lab, guest: "linux", runtime: try Self.runtime(for: lab, guest: "linux"))
        #expect(!LabFixtures.value(after: "-device", in: linux.arguments).contains(vfio))
        #expect(LabFixtures.value(after: "-kernel", in: linux.arguments).count == 1)
    }

    @Test func rombarIsSpelledTheWayThisQEMUReadsIt() throws {
        // QEMU 7.2 here: a number. The probe asks the installed QEMU.
        #expect(RombarSpelling.probe() == .number)
        #expect(RombarSpelling.parse(help: "vfio-pci options:\n  rombar=<uint32>        -  (default: 1)\n") == .number)
        // QEMU 10.0 (bookworm-backports): a signed number, -1 for auto; `rombar=off` is refused.
        #expect(RombarSpelling.parse(help: "vfio-pci options:\n  rombar=<int32>         -  (default: -1)\n") == .number)
        #expect(RombarSpelling.parse(help: "vfio-pci options:\n  rombar=<OnOffAuto>     - on/off/auto (default: \"auto\")\n") == .onOff)
        let lab = try Lab.load(path: LabFixtures.benchLab)
        let guest = try lab.selectGuest("freebsd")
        #expect(try lab.attachment(of: "scsi0", for: guest).devices[0].deviceAddArguments["rombar"] == 0)
        #expect(try lab.attachment(of: "scsi0", for: guest, rombar: .onOff).devices[0].deviceAddArguments["rombar"] == "off")
        var runtime = try Self.runtime(for: lab, guest: "netbsd")
        runtime.rombar = .onOff
        let args = try QEMUCommandLine.build(lab: lab, guest: "netbsd", runtime: runtime).arguments
        #expect(LabFixtures.value(after: "-device", in: args).contains("vfio-pci,id=scsi0,host=0000:03:05.0,bus=qlab-pcibr0,addr=0x1,rombar=off"))
    }

    @Test func passthroughByIDsResolvesAgainstSysfs() throws {
        let root = try LabTempDirectory("sysfs")
        defer { root.remove() }
        for (address, vendor, device) in [("0000:00:1f.2", "0x8086", "0x2922"), ("0000:03:06.0", "0x9004", "0x5078"), ("0000:03:05.0", "0x9004", "0x5078")] {
            try root.write("bus/pci/devices/\(address)/vendor", vendor + "\n")
            try root.write("bus/pci/devices/\(address)/device", device + "\n")
        }
        let selector = Passthrough.HostSelector.ids(vendor: 0x9004, device: 0x5078)
        #expect(try selector.resolve(sysfsRoot: root.path) == PCIAddress("0000:03:05.0"))
        do {
            _ = try Passthrough.HostSelector.ids(vendor: 0x1000, device: 0x0001).resolve(sysfsRoot: root.path)
            Issue.record("found a device that is not there")
        } catch {
            #expect(error.description.contains("no PCI device 1000:0001"))
        }
    }

    @Test func runtimeProblemsAreErrors() throws {
        let lab = try Lab.load(path: LabFixtures.emulatedLab)
        let long = "/tmp/" + String(repeating: "d", count: 100)
        do {
            _ = try QEMUCommandLine.build(lab: lab, guest: "linux", runtime: try Self.runtime(for: lab, guest: "linux", root: long))
            Issue.record("accepted a socket path over 107 bytes")
        } catch {
            #expect("\(error)".contains("QLAB_RUNTIME_DIR"))
        }
        var runtime = try Self.runtime(for: lab, guest: "linux")
        runtime.diskOverlay = nil
        #expect(throws: QEMUCommandLineError.self) { try QEMUCommandLine.build(lab: lab, guest: "linux", runtime: runtime) }
        #expect(throws: QEMUCommandLineError.self) { try QEMUCommandLine.build(lab: lab, guest: "nosuch", runtime: runtime) }
    }

    // MARK: Overlays (real qemu-img)

    @Test func overlayIsCreatedAtomicallyOverTheBase() async throws {
        let dir = try LabTempDirectory("overlay")
        defer { dir.remove() }
        let base = dir.path + "/base dir,v=1/base.qcow2"
        try FileManager.default.createDirectory(atPath: dir.path + "/base dir,v=1", withIntermediateDirectories: true)
        #expect(try LabFixtures.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "16M"]).status == 0)
        let overlay = dir.path + "/disk.qcow2"
        try await DiskOverlay.create(overlay: overlay, base: base, baseFormat: "qcow2")
        let info = try LabFixtures.run(["qemu-img", "info", "--output=json", overlay])
        #expect(info.status == 0)
        let json = try JSONValue.parse(info.output)
        #expect(json["backing-filename"]?.stringValue == base)
        #expect(json["backing-filename-format"]?.stringValue == "qcow2")
        #expect(json["format"]?.stringValue == "qcow2")
        // Nothing but the overlay is left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["base dir,v=1", "disk.qcow2"])

        // A failure leaves nothing behind.
        await #expect(throws: ImageToolError.self) { try await DiskOverlay.create(overlay: dir.path + "/x.qcow2", base: dir.path + "/missing.qcow2", baseFormat: "qcow2") }
        await #expect(throws: ImageToolError.self) { try await DiskOverlay.create(overlay: dir.path + "/y.qcow2", base: base, baseFormat: "vmdk") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["base dir,v=1", "disk.qcow2"])
    }

    @Test func firmwareVariablesAreQcow2() async throws {
        let dir = try LabTempDirectory("vars")
        defer { dir.remove() }
        let template = dir.path + "/VARS.fd"
        #expect(try LabFixtures.run(["qemu-img", "create", "-q", "-f", "raw", template, "128K"]).status == 0)
        let vars = dir.path + "/efivars.qcow2"
        try await FirmwareVariables.create(at: vars, template: template)
        let head = try #require(FileManager.default.contents(atPath: vars)).prefix(4)
        #expect(Array(head) == [0x51, 0x46, 0x49, 0xFB])
        await #expect(throws: ImageToolError.self) { try await FirmwareVariables.create(at: dir.path + "/v2.qcow2", template: dir.path + "/none.fd") }
    }
}
