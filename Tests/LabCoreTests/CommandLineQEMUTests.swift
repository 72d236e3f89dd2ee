import Foundation
import LabCore
import QMP
import Testing

/// The command line `qlab args` builds for labs/emulated-scsi.yaml, run by
/// the real QEMU (`-S`, TCG) with every path in directories whose names hold
/// spaces, commas and `=`, and the lab's disks made with qemu-img.
@Suite("QEMU command lines against real QEMU", .serialized)
struct CommandLineQEMUTests {
    /// A QEMU started from a built command line; `stop()` always ends it.
    final class RunningQEMU: @unchecked Sendable {
        let process = Process()
        let stderr = Pipe()

        init(_ commandLine: QEMUCommandLine) throws {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = commandLine.argv
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = FileHandle.nullDevice
            process.standardError = stderr
            try process.run()
        }

        /// Waits for a socket file QEMU creates; false if QEMU exits first or 30 s pass.
        func waitForSocket(_ path: String) -> Bool {
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline {
                if FileManager.default.fileExists(atPath: path) { return true }
                if !process.isRunning { return false }
                usleep(10_000)
            }
            return false
        }

        var errorText: String {
            String(decoding: stderr.fileHandleForReading.availableData, as: UTF8.self)
        }

        func stop() {
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
            }
            process.waitUntilExit()
        }
    }

    /// QEMU creates the socket file (bind) a moment before it listens: retry refusals briefly.
    static func connect(_ path: String) async throws -> QMPClient {
        var attempts = 0
        while true {
            do {
                return try await QMPClient.connect(path: path)
            } catch {
                attempts += 1
                if attempts >= 200 { throw error }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
    }

    struct Fixture {
        let dir: LabTempDirectory
        let lab: Lab
        let runtime: QEMURuntime
    }

    /// The emulated lab with its images replaced by temp files in awkwardly named directories.
    static func fixture(attachAtBoot: Bool) async throws -> Fixture {
        let dir = try LabTempDirectory("qemu")
        let images = dir.path + "/img dir,v=1"
        let run = dir.path + "/run dir,a=b"
        let state = dir.path + "/state dir,x=y"
        for path in [images, run + "/emulated-scsi", state + "/emulated-scsi/linux/disks"] {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        var lab = try Lab.load(path: LabFixtures.emulatedLab)
        var guest = try lab.selectGuest("linux")
        guest.disk = images + "/disk.qcow2"
        #expect(try LabFixtures.run(["qemu-img", "create", "-q", "-f", "qcow2", guest.disk!, "64M"]).status == 0)
        let target = images + "/scsi-target.qcow2"
        #expect(try LabFixtures.run(["qemu-img", "create", "-q", "-f", "qcow2", target, "16M"]).status == 0)
        // QEMU reads -kernel at start even with -S: use the real kernel when images/build.sh
        // has made it (linked into the awkward directory), else boot "from the disk".
        let kernel = LabFixtures.repositoryRoot + "/images/out/linux/vmlinuz"
        if FileManager.default.fileExists(atPath: kernel) {
            try FileManager.default.createSymbolicLink(atPath: images + "/vmlinuz", withDestinationPath: kernel)
            guest.kernel = images + "/vmlinuz"
            guest.initrd = nil
        } else {
            guest.kernel = nil
            guest.initrd = nil
            guest.append = nil
        }
        lab.guests = [guest]
        for index in lab.devices.indices {
            lab.devices[index].attach = attachAtBoot ? .boot : .hotplug
            if case .emulated(var controller) = lab.devices[index].kind {
                for d in controller.disks.indices { controller.disks[d].image = target }
                lab.devices[index].kind = .emulated(controller)
            }
        }
        var runtime = QEMURuntime.standard(lab: lab, guest: guest, runtimeDirectory: run, stateDirectory: state, accel: AccelDecision(.tcg, reason: "test"))
        runtime.startPaused = true
        try await DiskOverlay.create(overlay: runtime.diskOverlay!, base: guest.disk!, baseFormat: "qcow2")
        for (_, overlay) in runtime.deviceDiskOverlays {
            try await DiskOverlay.create(overlay: overlay, base: target, baseFormat: "qcow2")
        }
        return Fixture(dir: dir, lab: lab, runtime: runtime)
    }

    @Test func emulatedLabStartsAndTakesItsControllersByHotplug() async throws {
        let fixture = try await Self.fixture(attachAtBoot: false)
        defer { fixture.dir.remove() }
        let commandLine = try QEMUCommandLine.build(lab: fixture.lab, guest: "linux", runtime: fixture.runtime)
        #expect(commandLine.arguments.contains("-S"))
        let qemu = try RunningQEMU(commandLine)
        defer { qemu.stop() }
        #expect(qemu.waitForSocket(fixture.runtime.qmpSocket), "QEMU did not start: \(qemu.errorText)")
        // QEMU makes its sockets one after another while it parses the command line.
        #expect(qemu.waitForSocket(fixture.runtime.serialSocket))
        #expect(qemu.waitForSocket(fixture.runtime.supervisorSocket!))

        let client = try await Self.connect(fixture.runtime.qmpSocket)
        defer { client.close() }
        let status = try await client.execute("query-status")
        #expect(status["status"]?.stringValue == "prelaunch")
        let name = try await client.execute("query-name")
        #expect(name["name"]?.stringValue == "emulated-scsi")
        let pid = try String(contentsOfFile: fixture.runtime.pidFile!, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(pid == String(qemu.process.processIdentifier))

        // Hotplug both controllers with the attachments `up`/`hotplug` use, on fresh overlays.
        let guest = try fixture.lab.selectGuest("linux")
        for device in fixture.lab.devices {
            var overlays: [String: String] = [:]
            for disk in device.emulated?.disks ?? [] {
                let overlay = fixture.dir.path + "/state dir,x=y/\(disk.id).qcow2"
                try await DiskOverlay.create(overlay: overlay, base: disk.image, baseFormat: disk.format)
                overlays[disk.id] = overlay
            }
            let attachment = try fixture.lab.attachment(of: device.name, for: guest, diskOverlays: overlays)
            for blockdev in attachment.blockdevs {
                _ = try await client.execute("blockdev-add", arguments: blockdev.blockdevAddArguments.objectValue)
            }
            for spec in attachment.devices {
                _ = try await client.execute("device_add", arguments: spec.deviceAddArguments.objectValue)
            }
        }
        // Before the firmware numbers the bridge's bus, query-pci lists nothing behind it;
        // QOM shows where each controller went: behind qlab-pcibr0, slots 1 and 2 (devfn 8, 16).
        for (id, slot) in [("scsi-am", 1), ("scsi-lsi", 2)] {
            let devfn = try await client.execute("qom-get", arguments: ["path": .string("/machine/peripheral/" + id), "property": "addr"])
            #expect(devfn.intValue == slot * 8, "\(id)")
            let bus = try await client.execute("qom-get", arguments: ["path": .string("/machine/peripheral/" + id), "property": "parent_bus"])
            #expect(bus.stringValue == "/machine/peripheral/qlab-pcibr0/qlab-pcibr0", "\(id)")
        }
        let buses = try await client.execute("query-pci")
        let root = try #require(buses[0]?["devices"]?.arrayValue)
        #expect(root.first { $0["qdev_id"]?.stringValue == "qlab-pcibr0" }?["slot"]?.intValue == 5)
        #expect(root.first { $0["qdev_id"]?.stringValue == "qlab-disk" }?["slot"]?.intValue == 3)
        let blocks = try await client.execute("query-named-block-nodes", arguments: ["flat": true])
        let names = Set((blocks.arrayValue ?? []).compactMap { $0["node-name"]?.stringValue })
        #expect(names.isSuperset(of: ["qlab-disk-fmt", "scsi-am-disk0-fmt", "scsi-lsi-disk0-fmt"]))

        _ = try? await client.execute("quit")
        qemu.process.waitUntilExit()
        #expect(qemu.process.terminationStatus == 0)
    }

    @Test func emulatedLabWithControllersAtBoot() async throws {
        let fixture = try await Self.fixture(attachAtBoot: true)
        defer { fixture.dir.remove() }
        let commandLine = try QEMUCommandLine.build(lab: fixture.lab, guest: "linux", runtime: fixture.runtime)
        #expect(LabFixtures.value(after: "-device", in: commandLine.arguments).contains("am53c974,id=scsi-am,bus=qlab-pcibr0,addr=0x1"))
        let qemu = try RunningQEMU(commandLine)
        defer { qemu.stop() }
        #expect(qemu.waitForSocket(fixture.runtime.qmpSocket), "QEMU did not start: \(qemu.errorText)")
        let client = try await Self.connect(fixture.runtime.qmpSocket)
        defer { client.close() }
        let blocks = try await client.execute("query-named-block-nodes", arguments: ["flat": true])
        let files = (blocks.arrayValue ?? []).filter { $0["node-name"]?.stringValue == "scsi-lsi-disk0-file" }.compactMap { $0["file"]?.stringValue }
        // The controller's disk runs on its overlay in the awkwardly named state directory.
        #expect(files == [fixture.runtime.deviceDiskOverlays["scsi-lsi-disk0"]!])
        _ = try? await client.execute("quit")
        qemu.process.waitUntilExit()
        #expect(qemu.process.terminationStatus == 0)
    }

    /// Every OS profile's command line (machine, firmware, CPU, disk interface, NIC, a card
    /// at boot in qlab's slot) is accepted by QEMU 7.2.
    @Test(arguments: GuestOS.allCases)
    func everyProfileStartsInQEMU(_ os: GuestOS) async throws {
        let dir = try LabTempDirectory("profile")
        defer { dir.remove() }
        #expect(try LabFixtures.run(["qemu-img", "create", "-q", "-f", "qcow2", dir.path + "/base.qcow2", "64M"]).status == 0)
        #expect(try LabFixtures.run(["qemu-img", "create", "-q", "-f", "qcow2", dir.path + "/target.qcow2", "16M"]).status == 0)
        let lab = try LabFixtures.load(
            """
            name: profile-\(os.rawValue)
            devices:
              card:
                emulated: {driver: lsi53c895a, disks: [target.qcow2]}
                attach: boot
            guests:
              g:
                os: \(os.rawValue)
                disk: base.qcow2
                network: user
            """, in: dir)
        let guest = try lab.selectGuest("g")
        var runtime = QEMURuntime.standard(lab: lab, guest: guest, runtimeDirectory: dir.path + "/run", stateDirectory: dir.path + "/state", accel: AccelDecision(.tcg, reason: "test"))
        runtime.startPaused = true
        try FileManager.default.createDirectory(atPath: dir.path + "/run/" + lab.name, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir.path + "/state/\(lab.name)/g/disks", withIntermediateDirectories: true)
        try await DiskOverlay.create(overlay: runtime.diskOverlay!, base: guest.disk!, baseFormat: "qcow2")
        for (_, overlay) in runtime.deviceDiskOverlays { try await DiskOverlay.create(overlay: overlay, base: dir.path + "/target.qcow2", baseFormat: "qcow2") }
        if let vars = runtime.firmwareVars { try await FirmwareVariables.create(at: vars) }
        let commandLine = try QEMUCommandLine.build(lab: lab, guest: "g", runtime: runtime)
        let family = commandLine.placement.family
        #expect(family == (os == .dos ? .pc : .q35))
        let qemu = try RunningQEMU(commandLine)
        defer { qemu.stop() }
        #expect(qemu.waitForSocket(runtime.qmpSocket), "QEMU refused the \(os) command line: \(qemu.errorText)")
        let client = try await Self.connect(runtime.qmpSocket)
        defer { client.close() }
        #expect(try await client.execute("query-status")["status"]?.stringValue == "prelaunch")
        // The card in qlab's slot: behind the bridge on q35, pci.0 slot 5 on pc.
        let devfn = try await client.execute("qom-get", arguments: ["path": "/machine/peripheral/card", "property": "addr"])
        #expect(devfn.intValue == (family == .q35 ? 1 : 5) * 8)
        let nic = try await client.execute("qom-get", arguments: ["path": "/machine/peripheral/qlab-nic0", "property": "type"])
        #expect(nic.stringValue == guest.profile.nicModel)
        // Snapshots work: every writable drive (overlay, card disk, UEFI variables) is qcow2.
        let saved = try await client.execute("human-monitor-command", arguments: ["command-line": "savevm ready"])
        #expect(saved.stringValue == "", "savevm: \(saved)")
        _ = try? await client.execute("quit")
        qemu.process.waitUntilExit()
    }
}
