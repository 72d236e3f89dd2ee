import Foundation
import LabCore
import QMP
import Testing

/// `qlab hotplug/unplug/snapshot/reset` as a user runs them: the built
/// binary against a lab with no OS, started paused.
@Suite("Device and snapshot commands (real QEMU)", .serialized)
struct DeviceCommandTests {
    @Test func commandsSayWhatTheyDidAndRefuseClearly() async throws {
        let fixture = try DeviceLabFixture()
        let lab = try fixture.bareLab()
        do {
            _ = try await fixture.controller.up(labFile: lab, options: LabController.UpOptions(paused: true))

            let unknown = try fixture.qlab("hotplug", "bare-dev", "scsi-amm")
            #expect(unknown.status == 2)
            #expect(unknown.output.contains("did you mean 'scsi-am'"), "\(unknown.output)")
            #expect(unknown.output.contains("its devices: scsi-am"))

            let notAttached = try fixture.qlab("unplug", "bare-dev", "scsi-am")
            #expect(notAttached.status == 1)
            #expect(notAttached.output.contains("is not attached"), "\(notAttached.output)")
            #expect(notAttached.stderr.contains("`qlab hotplug bare-dev scsi-am` attaches it"), "\(notAttached.stderr)")

            let hotplug = try fixture.qlab("hotplug", "bare-dev", "scsi-am", "--steps")
            #expect(hotplug.status == 0, "\(hotplug.output)")
            #expect(hotplug.output.contains("scsi-am attached: am53c974 at qlab-pcibr0 slot 0x1"))
            #expect(hotplug.output.contains("device_add scsi-am:"))
            // --steps is the command's own output, not logging.
            #expect(!hotplug.stderr.contains("debug qlab."), "\(hotplug.stderr)")
            let twice = try fixture.qlab("hotplug", "bare-dev", "scsi-am")
            #expect(twice.status == 1)
            #expect(twice.output.contains("already attached"))
            #expect(twice.stderr.contains("; `qlab unplug bare-dev scsi-am` first"), "\(twice.stderr)")

            let noReset = try fixture.qlab("unplug", "bare-dev", "scsi-am", "--no-reset-fallback")
            #expect(noReset.status == 1)
            #expect(noReset.output.contains("the VM is prelaunch"), "\(noReset.output)")
            // -v is logging only: no step times on stdout.
            let unplug = try fixture.qlab("unplug", "bare-dev", "scsi-am", "--timeout", "1", "-v")
            #expect(unplug.stderr.contains("debug qlab."), "\(unplug.stderr)")
            #expect(!unplug.stdout.contains("\n  "), "\(unplug.stdout)")
            #expect(unplug.status == 0, "\(unplug.output)")
            #expect(unplug.output.contains("the VM was not running"), "\(unplug.output)")
            #expect(unplug.output.contains("system_reset completed the unplug"))

            let badTag = try fixture.qlab("snapshot", "save", "bare-dev", "12")
            #expect(badTag.status == 2)
            #expect(badTag.output.contains("must not be all digits"))
            #expect(try fixture.qlab("hotplug", "bare-dev", "scsi-am").status == 0)
            let save = try fixture.qlab("snapshot", "save", "bare-dev", "t1", "--hmp")
            #expect(save.status == 1, "a paused VM cannot release the card for a save without --reset: \(save.output)")
            #expect(save.output.contains("scsi-am"))
            let saved = try fixture.qlab("snapshot", "save", "bare-dev", "t1", "--reset-fallback", "--no-reattach")
            #expect(saved.status == 0, "\(saved.output)")
            #expect(saved.output.contains("unplugged scsi-am first: the VM was not running"), "\(saved.output)")
            // The lab's revert method is fast (auto): a RAM image and the device state.
            #expect(saved.output.contains("snapshot 't1' saved (fast: RAM image snap-t1.ram + device state"), "\(saved.output)")
            #expect(saved.output.contains("revert method fast: fast (auto)"), "\(saved.output)")
            #expect(!saved.output.contains("plugged scsi-am back"))

            let list = try fixture.qlab("snapshot", "list", "bare-dev")
            #expect(list.status == 0)
            #expect(list.output.contains("VM CLOCK"))
            #expect(list.output.split(separator: "\n").contains { $0.hasPrefix("t1 ") })
            let json = try JSONValue.parse(try fixture.qlab("snapshot", "list", "bare-dev", "--json").output)
            #expect(json.arrayValue?.compactMap { $0["tag"]?.stringValue } == ["t1"])
            #expect(json.arrayValue?.first?["vm_state_size"]?.intValue ?? 0 > 0)

            let load = try fixture.qlab("snapshot", "load", "bare-dev", "t1")
            #expect(load.status == 0, "\(load.output)")
            #expect(load.output.contains("snapshot 't1' loaded (fresh QEMU on snap-t1.ram"), "\(load.output)")
            let missing = try fixture.qlab("snapshot", "load", "bare-dev", "t2")
            #expect(missing.status == 1)
            #expect(missing.output.contains("no snapshot 't2'; the lab has: t1"))
            #expect(try fixture.qlab("snapshot", "delete", "bare-dev", "t1").status == 0)
            #expect(try fixture.qlab("snapshot", "list", "bare-dev").output.contains("no snapshots"))

            let reset = try fixture.qlab("reset", "bare-dev")
            #expect(reset.status == 0, "\(reset.output)")
            #expect(reset.output.contains("lab bare-dev reset"))

            await fixture.down("bare-dev")
            let down = try fixture.qlab("hotplug", "bare-dev", "scsi-am")
            #expect(down.status == ExitStatus.noSuchLab.rawValue, "a lab that is not running: exit 3")
            #expect(down.output.contains("not running"), "\(down.output)")
        } catch {
            fixture.cleanUp()
            throw error
        }
        fixture.cleanUp()
    }
}
