import Foundation
import LabCore
import Platform
import QMP
import Testing

/// One planner for `args`, `up` and hotplug; a running lab works from its record.
@Suite("Launch plan (real QEMU)", .serialized)
struct LaunchPlanTests {
    /// `qlab args` prints exactly what `qlab up` starts: its argv is the
    /// running QEMU's /proc/PID/cmdline (a lab with a boot device and a
    /// hotplug one, so device placement is part of it).
    @Test func argsPrintsWhatUpRuns() async throws {
        try #require(DeviceLabFixture.haveGuestImages, "images/build.sh first")
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let lab = try fixture.writeLab("plan-args", """
            name: plan-args
            machine: {type: q35, accel: tcg, memory: 64M}
            devices:
              boot-scsi:
                emulated: {driver: lsi53c895a, disks: [{image: \(DeviceLabFixture.scsiTarget), readonly: true}]}
                attach: boot
              scsi-am:
                emulated: {driver: am53c974, disks: [{image: \(DeviceLabFixture.scsiTarget)}]}
                attach: hotplug
            guests:
              linux: {os: linux, kernel: \(DeviceLabFixture.imagesOut)/linux/vmlinuz, initrd: \(DeviceLabFixture.imagesOut)/linux/initrd.img}
            """)
        let args = try fixture.qlab("args", lab, "--json")
        #expect(args.status == 0, "\(args.output)")
        let printed = try JSONValue.parse(args.stdout).arrayValue?.compactMap(\.stringValue) ?? []
        #expect(printed.contains("-device") && printed.count > 10, "\(printed)")

        let up = try fixture.qlab("up", lab)
        #expect(up.status == 0, "\(up.output)")
        let record = try #require(try fixture.runtime("plan-args").record)
        let running = ProcessTable.commandLine(record.qemuPID)
        #expect(running == printed, "qlab args:\n\(printed)\nQEMU runs:\n\(running)")
        // The record keeps the plan's argv too.
        #expect(record.argv == printed)
        #expect(try fixture.qlab("down", "plan-args").status == 0)
    }

    /// A lab file edited while the lab is up (the hotplug device's driver
    /// changed, the device renamed away, another device put first) does not
    /// change what hotplug does to the running lab: it works from the lab
    /// as planned at `up`, kept in the record.
    @Test func labFileEditedWhileUpDoesNotChangeHotplug() async throws {
        try #require(DeviceLabFixture.haveGuestImages, "images/build.sh first")
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let lab = try fixture.bareLab()
        _ = try await fixture.controller.up(labFile: lab, options: LabController.UpOptions(paused: true))
        let planned = try #require(try fixture.runtime("bare-dev").record)
        let before = try await LabSession.open(runtime: fixture.runtime("bare-dev"))
        let slot = before.placement?.placement(of: "scsi-am")
        before.close()
        #expect(slot != nil)

        let disk = fixture.labDirectory + "/blank.qcow2"
        try """
            name: bare-dev
            machine: {type: q35, accel: tcg, memory: 64M}
            devices:
              first:
                emulated: {driver: lsi53c895a}
                attach: hotplug
              renamed:
                emulated: {driver: lsi53c895a, disks: [{image: \(DeviceLabFixture.scsiTarget)}]}
                attach: hotplug
            guests:
              bare: {os: linux, disk: \(disk)}
            """.write(toFile: lab, atomically: true, encoding: .utf8)

        // Through the CLI (a new process, reading only the record)...
        let hotplug = try fixture.qlab("hotplug", "bare-dev", "scsi-am")
        #expect(hotplug.status == 0, "\(hotplug.output)")
        let type = try fixture.qlab("qmp", "bare-dev", "qom-get", #"{"path": "/machine/peripheral/scsi-am", "property": "type"}"#)
        #expect(type.stdout.contains("am53c974"), "\(type.output)")
        #expect(try fixture.qlab("hotplug", "bare-dev", "first").status != 0, "a device only the edited file has")
        #expect(try fixture.qlab("unplug", "bare-dev", "scsi-am").status == 0)

        // ...and in process: the session's lab is the planned one, its slot the boot plan's.
        let session = try await LabSession.open(runtime: fixture.runtime("bare-dev"))
        defer { session.close() }
        #expect(session.lab.devices.map(\.name) == ["scsi-am"])
        #expect(session.placement?.placement(of: "scsi-am") == slot)
        let attached = try await session.attach("scsi-am")
        #expect(attached.driver == "am53c974")
        #expect(attached.placement == slot)
        #expect(session.currentDeviceState("scsi-am") == .hotplug)
        #expect(try fixture.runtime("bare-dev").record?.labSource == planned.labSource)
    }
}

/// QEMU's spelling of vfio-pci options is asked of the binary once, not per command.
@Suite("QEMU capabilities")
struct QEMUCapabilitiesTests {
    /// `qlab args` twice asks a (fake) QEMU once: the answer is kept in the
    /// state root keyed by the binary's path, size and mtime; a changed binary
    /// is asked again. The spelling it gives reaches the command line.
    @Test func probedOncePerBinary() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        try FileManager.default.createDirectory(atPath: env.stateRoot, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let counter = env.labDirectory + "/probes"
        let qemu = env.labDirectory + "/fake-qemu"
        func writeQEMU(_ comment: String) throws {
            try """
                #!/bin/sh
                # \(comment)
                echo probe >> \(counter)
                echo 'vfio-pci options:'
                echo '  rombar=<OnOffAuto>     - on/off/auto (default: "auto")'
                """.write(toFile: qemu, atomically: false, encoding: .utf8)
            chmod(qemu, 0o755)
        }
        try writeQEMU("v1")
        let lab = try env.writeLab("caps", """
            name: caps
            qemu: \(qemu)
            machine: {type: q35, accel: tcg, memory: 64M}
            devices:
              card:
                passthrough: {host: "0000:03:05.0", rombar: false}
                attach: boot
            guests:
              g: {os: linux, kernel: vmlinuz}
            """)
        func probes() -> Int {
            ((try? String(contentsOfFile: counter, encoding: .utf8)) ?? "").split(separator: "\n").count
        }
        for _ in 0..<2 {
            let args = try env.qlab("args", lab)
            #expect(args.status == 0, "\(args.output)")
            #expect(args.stdout.contains("rombar=off"), "\(args.stdout)")
        }
        #expect(probes() == 1)
        try writeQEMU("v2, a different size")
        #expect(try env.qlab("args", lab).status == 0)
        #expect(probes() == 2)
    }
}
