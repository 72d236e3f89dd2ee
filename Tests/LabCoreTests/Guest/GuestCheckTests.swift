import Foundation
import LabCore
import QMP
import Synchronization
import Testing

/// `qlab guest check` with the real test guest under TCG (images/build.sh builds it).
@Suite("Guest check (real guest)", .serialized)
struct GuestCheckTests {
    /// The example lab (both emulated controllers hotplugged): every step passes,
    /// the JSON report says so, and the lab is gone afterwards.
    @Test func emulatedLabIsReadyAndEveryStepPasses() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let labFile = QLabTestEnvironment.repositoryRoot + "/labs/emulated-scsi.yaml"
        let result = try env.qlab("guest", "check", labFile, "linux", "--json")
        #expect(result.status == 0, "\(result.output)")
        let report = try #require(try? JSONValue.parse(result.stdout), "\(result.output)")
        let steps = report["steps"]?.arrayValue ?? []
        #expect(steps.compactMap { $0["id"]?.stringValue } == [
            "machine", "console", "ready", "login", "prompt", "exit_status", "output", "long_line", "quoting", "interrupt",
            "snapshot", "device_hotplug", "device_hotplug", "rescan", "scsi_disks", "device_unplug", "device_unplug",
        ])
        for step in steps where step["id"]?.stringValue != "login" {
            #expect(step["status"]?.stringValue == "pass", "\(step)")
        }
        // No login: set: not needed, so its SKIP does not count against the guest.
        #expect(steps[3]["status"]?.stringValue == "skip" && steps[3]["required"] == .bool(false))
        #expect(steps.filter { $0["id"]?.stringValue == "device_hotplug" }.compactMap { $0["device"]?.stringValue } == ["scsi-am", "scsi-lsi"])
        #expect(steps[14]["detail"]?.stringValue?.contains("2 listed") == true, "\(steps[14])")
        #expect(steps[15]["detail"]?.stringValue?.contains("its 1 disk(s) left the listing") == true, "\(steps[15])")
        #expect(report["ready"] == .bool(true))
        #expect(report["passed"] == JSONValue(16) && report["failed"] == JSONValue(0))
        #expect(JSONOutput.keysNotSnakeCase(in: report).isEmpty)
        // The lines went to stderr with --json, one per step.
        #expect(result.stderr.contains("PASS  scsi-lsi: unplug, guest survives"), "\(result.stderr)")
        #expect(result.stderr.contains("guest linux (linux) is ready for qlab run: 16 passed, 1 skipped"), "\(result.stderr)")
        CancellationQEMUTests.expectNothingLeft(env, "emulated-scsi", "after the check")
    }

    /// A guest whose console is not on the serial port: the console step fails
    /// with the OS's recipe (the profile's, as in docs/guests.md), the rest is
    /// skipped, exit 124 (boot_timeout ran out).
    @Test func silentConsoleFailsWithTheOSRecipe() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        // Kernel messages stay on the VGA console (no console=ttyS0) and the test
        // guest's shell goes to tty1 instead of ttyS0.
        let file = try env.writeLab("silent", Self.lab("silent", append: "quiet panic=-1 qlab.console=tty1", extra: "boot_timeout: 20s"))
        let result = try env.qlab("guest", "check", file, "--json")
        #expect(result.status == 124, "\(result.output)")
        let report = try #require(try? JSONValue.parse(result.stdout), "\(result.output)")
        let steps = report["steps"]?.arrayValue ?? []
        #expect(steps.first?["status"]?.stringValue == "pass")
        let console = steps.dropFirst().first
        #expect(console?["id"]?.stringValue == "console" && console?["status"]?.stringValue == "fail", "\(String(describing: console))")
        let recipe = OSProfile.profile(for: .linux).consoleRecipe
        #expect(console?["hint"]?.stringValue == "linux: \(recipe) (docs/guests.md)")
        #expect(steps.dropFirst(2).allSatisfy { $0["status"]?.stringValue == "skip" && $0["required"] == .bool(true) })
        #expect(report["boot_timed_out"] == .bool(true) && report["ready"] == .bool(false))
        #expect(result.stderr.contains("FAIL  serial console shows output"), "\(result.stderr)")
        #expect(result.stderr.contains("hint: linux: " + recipe), "\(result.stderr)")
        CancellationQEMUTests.expectNothingLeft(env, "silent", "after the check")
    }

    /// The ready text never comes: the ready step names the whole boot_timeout, the part of
    /// it that was left for the ready text, and where the rest went (QEMU's start to the
    /// first console output), and the two parts add up to the whole.
    @Test func readyTimeoutSaysTheBudgetLeft() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let out = QLabTestEnvironment.imagesOut
        // Kernel messages on the console (no `quiet`): the first output comes early, most of the budget is the ready wait's.
        let file = try env.writeLab("unready", """
            name: unready
            machine: {type: q35, accel: tcg, memory: 256M, smp: 1}
            guests:
              linux:
                os: linux
                kernel: \(out)/linux/vmlinuz
                initrd: \(out)/linux/initrd.img
                append: console=ttyS0 panic=-1
                disk: \(out)/linux/disk.qcow2
                ready: qlab-never-printed
                boot_timeout: 30s
            """)
        let result = try env.qlab("guest", "check", file, "--json")
        #expect(result.status == 124, "\(result.output)")
        let report = try #require(try? JSONValue.parse(result.stdout), "\(result.output)")
        let steps = report["steps"]?.arrayValue ?? []
        #expect(steps.prefix(3).compactMap { "\($0["id"]?.stringValue ?? ""):\($0["status"]?.stringValue ?? "")" } == ["machine:pass", "console:pass", "ready:fail"])
        let detail = try #require(steps.count > 2 ? steps[2]["detail"]?.stringValue : nil)
        let pattern = try NSRegularExpression(pattern:
            #"^no ready text "qlab-never-printed" within the 30 s boot_timeout: ([0-9.]+) (s|ms) were left for it after ([0-9.]+) (s|ms) from QEMU's start to the first console output$"#)
        let match = try #require(pattern.firstMatch(in: detail, range: NSRange(detail.startIndex..., in: detail)), "\(detail)")
        func seconds(_ value: Int, _ unit: Int) -> Double {
            let number = Double(detail[Range(match.range(at: value), in: detail)!])!
            return detail[Range(match.range(at: unit), in: detail)!] == "ms" ? number / 1000 : number
        }
        let (left, spent) = (seconds(1, 2), seconds(3, 4))
        // Each is rounded to 0.1 s in the message: together they are the 30 s budget.
        #expect(abs(left + spent - 30) <= 0.2, "\(detail)")
        #expect(report["boot_timed_out"] == .bool(true))
        CancellationQEMUTests.expectNothingLeft(env, "unready", "after the check")
    }

    /// A wrong prompt, through the Swift API: the prompt step fails, every later
    /// step is skipped as not checked, the events came as the steps ended.
    @Test func wrongPromptFailsAtThePromptAndSkipsTheRest() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeLab("prompt", Self.lab("prompt", append: "console=ttyS0 quiet panic=-1", extra: "prompt: \"qlab> \""))
        let events = Mutex<[GuestCheck.Event]>([])
        let check = try GuestCheck(controller: env.controller, labFile: file, guest: "linux") { event in
            events.withLock { $0.append(event) }
        }
        let report = try await check.run()
        let statuses = report.steps.map { "\($0.kind.id):\($0.status.rawValue)" }
        #expect(statuses == [
            "machine:pass", "console:pass", "ready:pass", "login:skip", "prompt:fail", "exit_status:skip", "output:skip",
            "long_line:skip", "quoting:skip", "interrupt:skip", "snapshot:skip",
        ])
        let prompt = report.steps[4]
        #expect(prompt.detail.contains("\"qlab> \""), "\(prompt.detail)")
        #expect(prompt.consoleTail?.contains("qlab-guest-ready") == true, "\(prompt.consoleTail ?? "")")
        #expect(report.steps.dropFirst(5).allSatisfy { $0.required && $0.detail == "not checked: shell prompt matches failed" })
        #expect(!report.ready && !report.bootTimedOut && report.exitStatus == .failed)
        let seen = events.withLock { $0 }
        guard case .planned(let plan)? = seen.first else {
            Issue.record("the first event is not the plan: \(seen)")
            return
        }
        #expect(plan == report.steps.map(\.kind))
        #expect(seen.count == 1 + report.steps.count)
        CancellationQEMUTests.expectNothingLeft(env, "prompt", "after the check")
    }

    /// SIGINT while the check runs: exit 130, and no QEMU, supervisor, socket or lock is left.
    @Test func sigintLeavesNothingBehind() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("gcstop", tests: "  none: {run: \"true\"}")
        let check = try BackgroundQLab(env, ["guest", "check", file])
        #expect(waitUntil(limit: .seconds(300)) { check.stdout.contains("PASS  ready text") }, "\(check.stdout)\(check.stderr)")
        #expect(check.signal(SIGINT) == 130, "\(check.stdout)\(check.stderr)")
        #expect(check.stderr.contains("cancelled by SIGINT"), "\(check.stderr)")
        #expect(check.stdout.contains("check cancelled"), "\(check.stdout)")
        CancellationQEMUTests.expectNothingLeft(env, "gcstop", "after SIGINT")
    }

    /// QEMU refuses its command line: the first step fails with QEMU's words, the rest is skipped, nothing is left.
    @Test func qemuThatDoesNotStartFailsTheFirstStep() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeLab("nostart", Self.lab("nostart", append: "console=ttyS0", extra: "qemu_args: [-device, qlab-no-such-model]"))
        let report = try await GuestCheck(controller: env.controller, labFile: file, guest: nil).run()
        #expect(report.steps.first?.kind == .machine && report.steps.first?.status == .fail)
        #expect(report.steps.first?.detail.contains("qlab-no-such-model") == true, "\(report.steps.first?.detail ?? "")")
        #expect(report.steps.dropFirst().allSatisfy { $0.status == .skip })
        #expect(report.exitStatus == .failed)
        CancellationQEMUTests.expectNothingLeft(env, "nostart", "after the failed start")
    }

    /// The plan follows the OS profile: a guest without PCI hotplug gets the card at boot,
    /// no rescan or unplug steps, and a reset instead of a revert (no QEMU).
    @Test func planFollowsTheProfile() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let disk = try env.makeBlankDisk()
        let file = try env.writeLab("plan", """
            name: plan
            devices:
              scsi0: {emulated: {driver: lsi53c895a, disks: [\(disk)]}, attach: hotplug}
            guests:
              netbsd: {os: netbsd, disk: \(disk), ready: "login: ", login: {user: root}}
              linux: {os: linux, disk: \(disk), agent: true}
            """)
        let netbsd = try GuestCheck(controller: env.controller, labFile: file, guest: "netbsd")
        #expect(netbsd.strategy == .reset)
        #expect(netbsd.plan.map(\.id).suffix(3) == ["reset", "device_at_boot", "scsi_disks"])
        let linux = try GuestCheck(controller: env.controller, labFile: file, guest: "linux")
        #expect(linux.plan.map(\.id).suffix(6) == ["agent", "snapshot", "device_hotplug", "rescan", "scsi_disks", "device_unplug"])
        #expect(throws: LabFileError.self) { try GuestCheck(controller: env.controller, labFile: file, guest: "nosuch") }
    }

    /// A lab with the test guest and no devices.
    static func lab(_ name: String, append: String, extra: String) -> String {
        let out = QLabTestEnvironment.imagesOut
        return """
            name: \(name)
            machine: {type: q35, accel: tcg, memory: 256M, smp: 1}
            guests:
              linux:
                os: linux
                kernel: \(out)/linux/vmlinuz
                initrd: \(out)/linux/initrd.img
                append: \(append)
                disk: \(out)/linux/disk.qcow2
                ready: qlab-guest-ready
                \(extra)
            """
    }
}
