import Foundation
import LabCore
import Platform
import QMP
import Testing

/// QEMU's own crash in the loop: a `dc390` hotplugged twice into one QEMU
/// aborts it (QEMU 7.2.22 and 10.0.2; QLAB_QEMU picks the QEMU). qlab asks
/// the binary, refuses the loops that would do it, keeps the loop that works
/// (a fast revert: a fresh QEMU per revert), and explains the abort.
@Suite("QEMU crashes: dc390 second plug (real QEMU)", .serialized)
struct QEMUCrashTests {
    /// The lab with one hotplug dc390 (no OS: nothing boots).
    static func dc390Lab(_ fixture: DeviceLabFixture, name: String, extra: String) throws -> String {
        _ = try fixture.bareLab()
        return try fixture.writeLab(name, """
            name: \(name)
            machine: {type: q35, accel: tcg, memory: 64M}
            devices:
              scsi-dc:
                emulated: {driver: dc390, disks: [{image: \(DeviceLabFixture.scsiTarget)}]}
                attach: hotplug
            guests:
              bare: {os: linux, disk: blank.qcow2}
            tests:
              noop: {run: "true"}
            \(extra)
            """)
    }

    @Test func theProbeSeesTheAbortAndNamesTheVersion() throws {
        let answer = SecondDC390Plug.probe(qemu: Lab.defaultQEMU)
        guard case .aborts(let version) = answer else {
            Issue.record("expected the second plug to abort, got \(answer)")
            return
        }
        // query-version's numbers, e.g. "7.2.22 (Debian ...)".
        #expect(version.first?.isNumber == true, "\(version)")
        #expect(version.split(separator: ".").count >= 3, "\(version)")
    }

    @Test func loopsThatPlugItTwiceAreRefusedWhenTheLabIsLoaded() throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let loadvm = try Self.dc390Lab(fixture, name: "dc-loadvm", extra: "revert: loadvm")
        let run = try fixture.qlab("run", loadvm)
        #expect(run.status == 2, "\(run.output)")
        #expect(run.stderr.contains("dc-loadvm.yaml:"), "\(run.stderr)")
        #expect(run.stderr.contains("device 'scsi-dc' (driver dc390, attach: hotplug)"))
        #expect(run.stderr.contains("the revert method is loadvm"))
        #expect(run.stderr.contains("Use revert: fast"))
        #expect(run.stderr.contains("am53c974"))
        let version = try #require(SecondDC390Plug.probe(qemu: Lab.defaultQEMU).version)
        #expect(run.stderr.contains("QEMU \(version)"), "\(run.stderr)")
        #expect(!run.output.contains("did not boot"), "refused before any boot")

        let up = try fixture.qlab("up", loadvm)
        #expect(up.status == 2, "\(up.output)")
        let reset = try Self.dc390Lab(fixture, name: "dc-reset", extra: "strategy: reset")
        let args = try fixture.qlab("args", reset)
        #expect(args.status == 2, "\(args.output)")
        #expect(args.stderr.contains("strategy: reset unplugs it"), "\(args.stderr)")
        #expect(!args.stderr.contains("revert: fast"), "a reset loop has no revert to make fast")
        // Attached at boot it is plugged once per QEMU: accepted.
        let boot = try fixture.writeLab("dc-boot", try String(contentsOfFile: loadvm, encoding: .utf8)
            .replacingOccurrences(of: "attach: hotplug", with: "attach: boot").replacingOccurrences(of: "name: dc-loadvm", with: "name: dc-boot"))
        #expect(try fixture.qlab("args", boot).status == 0)
        #expect(fixture.qemuProcesses().isEmpty)
    }

    /// qlab refuses to plug a dc390 again into the QEMU it was unplugged from (a hotplug, a
    /// snapshot save's re-plug) before QEMU sees it; forced through raw QMP, QEMU aborts and
    /// its exit record explains it.
    @Test func aSecondPlugIsRefusedAndForcedItAbortsWithADiagnosis() async throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let lab = try Self.dc390Lab(fixture, name: "dc-fast", extra: "revert: fast")
        #expect(try fixture.qlab("args", lab).status == 0, "a fast revert is a fresh QEMU per plug: accepted")
        _ = try await fixture.controller.up(labFile: lab, options: LabController.UpOptions(paused: true))
        #expect(try fixture.qlab("hotplug", "dc-fast", "scsi-dc").status == 0)
        // A snapshot save unplugs and re-plugs the card: refused before anything is unplugged.
        let save = try fixture.qlab("snapshot", "save", "dc-fast", "s1")
        #expect(save.status == 1, "\(save.output)")
        #expect(save.stderr.contains("scsi-dc (dc390) was hotplugged into this QEMU"), "\(save.stderr)")
        #expect(save.stderr.contains("Unknown savevm section"))
        #expect(try fixture.qlab("status", "dc-fast").stdout.contains("scsi-dc (hotplug)"))
        #expect(try fixture.qlab("unplug", "dc-fast", "scsi-dc").status == 0)
        // Unplugged, the EEPROM's state is still in this QEMU: a save is still refused.
        let saveAfter = try fixture.qlab("snapshot", "save", "dc-fast", "s1")
        #expect(saveAfter.status == 1, "\(saveAfter.output)")
        #expect(saveAfter.stderr.contains("save before plugging it"), "\(saveAfter.stderr)")
        let second = try fixture.qlab("hotplug", "dc-fast", "scsi-dc")
        #expect(second.status == 1, "\(second.output)")
        #expect(second.stderr.contains("would abort QEMU"), "\(second.stderr)")
        #expect(second.stderr.contains("qlab down"))
        #expect(fixture.qemuProcesses().count == 1, "QEMU runs on")

        // Forced past qlab: QEMU aborts, and the supervisor's exit record says why.
        let placement = ["driver": "dc390", "id": "forced", "bus": "qlab-pcibr0", "addr": "0x1"]
        let arguments = String(decoding: try JSONSerialization.data(withJSONObject: placement), as: UTF8.self)
        let forced = try fixture.qlab("qmp", "dc-fast", "device_add", arguments)
        #expect(forced.status != 0, "\(forced.output)")
        let runtime = fixture.runtime("dc-fast")
        let exit = try #require(await runtime.exitRecord(since: 0, waiting: .seconds(10)))
        #expect(exit.exit == .signaled(6), "\(exit.exitDescription)")
        #expect(exit.qemuOutputTail(lines: 3).contains { $0.contains("Assertion `!se->compat") }, "\(exit.qemuOutput)")
        #expect(exit.diagnoses.map(\.id) == ["dc390-eeprom-replug"])
        // `qlab diagnose` on QEMU's words explains it too.
        let log = fixture.root + "/qemu-tail.txt"
        try exit.qemuOutputTail().joined(separator: "\n").write(toFile: log, atomically: true, encoding: .utf8)
        let diagnose = try fixture.qlab("diagnose", log)
        #expect(diagnose.output.contains("dc390-eeprom-replug"), "\(diagnose.output)")
        #expect(!diagnose.output.contains("No known problem"))
    }

    @Test(.enabled(if: DeviceLabFixture.haveGuestImages, "images/build.sh has not built the test guest"))
    func theFastLoopPlugsItOncePerQEMUAndPasses() throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let lab = try fixture.writeGuestLab("dc-loop", devices: """
              scsi-dc:
                emulated: {driver: dc390, disks: [{image: \(DeviceLabFixture.scsiTarget)}]}
                attach: hotplug
            """, tests: """
              find-target:
                run: qlab-scsi-scan -w 20 -n 1 >/dev/null && echo found
                expect: found
                timeout: 60s
            """, extra: "revert: fast")
        let run = try fixture.qlab("run", lab, "--repeat", "3")
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("3 passed"), "\(run.output)")
        #expect(fixture.qemuProcesses().isEmpty)
    }
}
