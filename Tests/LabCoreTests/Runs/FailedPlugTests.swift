import Foundation
import LabCore
import Testing

/// A card that QEMU refuses to plug back after the revert, inside `qlab run`
/// (issue 20, item 5), with real QEMU 7.2 and the test guest: the card is an
/// emulated lsi53c895a whose `romfile` a `before_each` hook removes before
/// the first run and puts back before the others, so QEMU's `device_add`
/// really fails once ("failed to find romfile"). That run is an `error`
/// naming QEMU's text and the diagnosis; the guest is not restarted; the next
/// run reverts again, plugs the card and passes.
@Suite("A failed plug in the run loop (real guest)", .serialized)
struct FailedPlugTests {
    @Test(arguments: ["fast", "loadvm"])
    func aRefusedPlugIsAnErrorAndTheNextRunRevertsAgain(method: String) async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let rom = env.labDirectory + "/card.rom"
        let devices = """
              scsi-lsi:
                emulated: {driver: lsi53c895a, disks: [{image: \(QLabTestEnvironment.imagesOut)/scsi-target.qcow2}]}
                attach: hotplug
                properties: {romfile: "\(rom)"}
            """
        // Run 1: no ROM file, so QEMU refuses the device_add; runs 2 and 3: a 2 KiB option ROM.
        let hook = env.labDirectory + "/rom-hook.sh"
        try #"""
            #!/bin/sh
            if [ "$QLAB_REPEAT" = 1 ]; then rm -f \#(rom); else { printf '\125\252\004'; head -c 2045 /dev/zero; } > \#(rom); fi

            """#.write(toFile: hook, atomically: true, encoding: .utf8)
        chmod(hook, 0o755)
        let file = try env.writeGuestLab("plugfail", devices: devices, tests: #"  disk: {run: "ls /sys/class/scsi_disk | grep -q ."}"#, extra: """
            revert: \(method)
            hooks:
              before_each: \(hook)
            """)
        let json = env.root + "/report.json"
        let run = try env.qlab("run", file, "--repeat", "3", "--json-report", json)
        // One error (the refused plug), no failed test: infrastructure only (exit 5).
        #expect(run.status == 5, "\(run.output)")
        let report = try TestReport(path: json)
        let runs = report.results.filter { !$0.isBoot }
        #expect(runs.map(\.outcome) == [.error, .passed, .passed], "\(run.output)\n\(runs.map(\.message))")
        let failed = try #require(runs.first)
        #expect(failed.message.contains("QEMU refused device_add lsi53c895a: failed to find romfile \"\(rom)\""), "\(failed.message)")
        #expect(failed.message.contains("the card was not plugged back"), "\(failed.message)")
        #expect(failed.diagnoses.map(\.id) == ["romfile-missing"], "\(failed.diagnoses.map(\.id))")
        // The revert ran, then the plug failed inside it: no rescan, no test.
        let steps = failed.steps.map(\.name)
        #expect(steps.contains("revert \(method)") && !steps.contains("rescan") && !steps.contains("test"), "\(steps)")
        // The next runs revert again (no new boot of the guest: qlab says when it restarts one) and find the card.
        for passed in runs.dropFirst() {
            #expect(passed.steps.map(\.name).prefix(4) == ["before_each", "revert \(method)", "rescan", "test"], "\(passed.steps.map(\.name))")
        }
        #expect(!run.output.contains("restarting guest"), "\(run.output)")
        #expect(env.qemuProcesses().isEmpty)
    }
}
