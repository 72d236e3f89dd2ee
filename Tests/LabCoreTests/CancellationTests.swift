import Foundation
import LabCore
import Platform
import QMP
import Synchronization
import Testing

/// The stop request, the cancelled outcome in reports, hooks killed with their group: no QEMU.
@Suite("Cancellation (no QEMU)")
struct CancellationUnitTests {
    @Test func stopRequestCountsAndCancelsTheWork() async throws {
        let stop = StopRequest()
        #expect(!stop.isRequested && !stop.isUrgent && stop.signal == nil)
        let seen = Mutex<[Int]>([])
        stop.onRequest { count in seen.withLock { $0.append(count) } }
        let started = AsyncStream<Void>.makeStream()
        let work = Task {
            try await stop.cancelling {
                started.continuation.yield()
                try await Task.sleep(for: .seconds(600))
                return "finished"
            }
        }
        for await _ in started.stream { break }
        stop.request(signal: SIGTERM)
        await #expect(throws: CancellationError.self) { try await work.value }
        #expect(stop.isRequested && !stop.isUrgent)
        stop.request(signal: SIGINT)
        #expect(stop.isUrgent)
        #expect(stop.signal == SIGTERM, "the first request's signal is kept")
        #expect(seen.withLock { $0 } == [1, 2])
        #expect(ExitStatus.cancelled(by: stop.signal!) == .terminated)
    }

    @Test func cancelledRunsAreCountedAndSkippedInJUnit() throws {
        let entries = try TestMatrix(lab: try RunMatrixTests.lab()).entries
        let report = TestReport(lab: "m", startedAt: 1, duration: 2, shards: [], results: [
            TestResult(entry: entries[0], outcome: .passed, duration: 1),
            TestResult(entry: entries[1], outcome: .cancelled, duration: 1, message: "cancelled during test"),
            TestResult(entry: entries[2], outcome: .cancelled, duration: 0, message: "not run: the run was cancelled"),
        ])
        #expect(report.wasCancelled && !report.allPassed)
        #expect(report.summaryLine == "1 passed, 2 cancelled")
        #expect(report.json["summary"]?["cancelled"]?.intValue == 2)
        #expect(report.json["results"]?.arrayValue?.map { $0["outcome"]?.stringValue } == ["passed", "cancelled", "cancelled"])
        let xml = JUnitReport.xml(report)
        #expect(xml.contains(#"<testsuites name="m" tests="3" failures="0" errors="0" skipped="2""#))
        // Each guest's suite counts its own.
        #expect(xml.contains(#"<testsuite name="m.a" tests="1" failures="0" errors="0" skipped="0""#))
        #expect(xml.contains(#"<testsuite name="m.b" tests="2" failures="0" errors="0" skipped="2""#))
        #expect(xml.components(separatedBy: #"<skipped message="cancelled">"#).count == 3)
    }

    /// A cancelled agent command (`qlab exec --via agent` on SIGINT) is killed in the
    /// guest. (The test guest has no qemu-ga, so a fake agent stands in.)
    @Test func cancelledAgentCommandIsKilledInTheGuest() async throws {
        let script = ScriptedExec(pollsBeforeExit: .max, status: [:])
        let fake = try FakeAgent { script.respond($0) }
        let agent = try await GuestAgent.adopt(fd: fake.clientFD, timeout: .seconds(5))
        defer { agent.close() }
        let run = Task { try await agent.run("sleep 1000", timeout: .seconds(600)) }
        #expect(await waitUntilAsync(limit: .seconds(30)) { fake.received.contains { $0["execute"]?.stringValue == "guest-exec-status" } })
        run.cancel()
        await #expect(throws: GuestError.self) { try await run.value }
        let execs = fake.received.filter { $0["execute"]?.stringValue == "guest-exec" }
        #expect(execs.count == 2, "the command, then the kill")
        let kill = try #require(execs.last?["arguments"]?["arg"]?.arrayValue?.last?.stringValue)
        #expect(kill.contains("kill -KILL 4242"))
    }

    /// A hook that starts a background child and sleeps: `sh`'s pid and the child's.
    static func groupHook(_ directory: String) -> String {
        "sleep 1000 & echo $! > \(directory)/child.pid; echo $$ > \(directory)/hook.pid; sleep 1000"
    }

    static func pids(_ directory: String) -> [Int32] {
        ["hook.pid", "child.pid"].compactMap { name in
            (try? String(contentsOfFile: directory + "/" + name, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
    }

    @Test func hookTimeoutKillsItsProcessGroup() async throws {
        let dir = "/tmp/qlab-hook-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let outcome = try await HostHook.run(Self.groupHook(dir), directory: dir, environment: [:], timeout: .seconds(2))
        #expect(outcome.timedOut && !outcome.succeeded)
        let pids = Self.pids(dir)
        #expect(pids.count == 2)
        for pid in pids {
            // SIGKILL to the group is delivered at once; the orphan may need its reaper a moment.
            #expect(waitUntil(limit: .seconds(30)) { !ProcessTable.isRunning(pid) }, "pid \(pid) of the hook's group survived")
        }
    }

    @Test func cancelledHookIsKilledWithItsGroup() async throws {
        let dir = "/tmp/qlab-hook-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let hook = Task { try await HostHook.run(Self.groupHook(dir), directory: dir, environment: [:], timeout: .seconds(600)) }
        #expect(await waitUntilAsync(limit: .seconds(60)) { Self.pids(dir).count == 2 })
        hook.cancel()
        let outcome = try await hook.value
        #expect(outcome.cancelled && !outcome.timedOut && !outcome.succeeded)
        for pid in Self.pids(dir) {
            #expect(waitUntil(limit: .seconds(30)) { !ProcessTable.isRunning(pid) }, "pid \(pid) of the hook's group survived")
        }
    }
}

/// Polls `condition` until it holds or the safety limit passes (not a timing assertion),
/// sleeping with `Task.sleep`: an async test that waits for work it started in a `Task`
/// must not block its thread, or a cooperative pool one thread wide never runs that work
/// (ParallelRunTests waited its whole limit that way once in CI).
func waitUntilAsync(limit: Duration, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(100))
    }
    return condition()
}

/// Polls `condition` until it holds or the safety limit passes (not a timing assertion).
func waitUntil(limit: Duration, _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(100_000)
    }
    return condition()
}

/// SIGINT, SIGTERM and SIGKILL of real `qlab` commands with the real test guest under TCG.
@Suite("Cancellation of real commands (real guest)", .serialized)
struct CancellationQEMUTests {
    static let sleeperTests = """
          first: {run: "true"}
          sleeper: {run: "echo QLAB-SL''EEPING; sleep 1000", timeout: 600s}
          last: {run: "true"}
        """

    /// True once the guest printed the sleeper's marker (the typed command does not contain it).
    static func sleeping(_ env: QLabTestEnvironment, _ lab: String) -> Bool {
        let log = env.stateRoot + "/\(lab)/linux/console.log"
        return ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("QLAB-SLEEPING")
    }

    /// Processes whose command line names the test's runtime dir: QEMU and supervisors.
    static func lingering(_ env: QLabTestEnvironment) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).compactMap { pid in
            let argv = ProcessTable.commandLine(pid)
            return argv.contains { $0.contains(env.runtimeRoot) } && ProcessTable.isRunning(pid) ? "\(pid): \(argv.joined(separator: " "))" : nil
        }
    }

    /// No QEMU, supervisor, runtime dir, socket or lock file of `lab`.
    static func expectNothingLeft(_ env: QLabTestEnvironment, _ lab: String, _ comment: String) {
        #expect(lingering(env).isEmpty, "\(comment): \(lingering(env))")
        #expect(!FileManager.default.fileExists(atPath: env.runtime(lab).directory), "\(comment): runtime dir left")
        #expect(!FileManager.default.fileExists(atPath: env.runtime(lab).lockPath), "\(comment): lock file left")
    }

    /// Ctrl-C in the middle of a test: exit 130, both reports with the done run and the rest
    /// cancelled, nothing left, and the next run on the same lab works.
    @Test func sigintMidTestWritesReportsAndLeavesNothing() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("ctrlc", tests: Self.sleeperTests)
        let json = env.root + "/report.json"
        let junit = env.root + "/report.xml"
        let run = try BackgroundQLab(env, ["run", file, "--json-report", json, "--junit", junit])
        #expect(waitUntil(limit: .seconds(300)) { Self.sleeping(env, "ctrlc") }, "the sleeper never started: \(run.stdout)\(run.stderr)")
        let status = run.signal(SIGINT)
        #expect(status == 130, "\(run.stdout)\(run.stderr)")
        #expect(run.stderr.contains("cancelled by SIGINT"))
        #expect(run.stdout.contains("1 passed, 2 cancelled"), "\(run.stdout)")
        let report = try TestReport(path: json)
        #expect(report.results.map(\.outcome) == [.passed, .cancelled, .cancelled])
        #expect(report.results[1].message == "cancelled during test", "\(report.results[1].message)")
        let xml = try String(contentsOfFile: junit, encoding: .utf8)
        #expect(xml.components(separatedBy: #"<skipped message="cancelled">"#).count == 3, "\(xml)")
        Self.expectNothingLeft(env, "ctrlc", "after SIGINT")

        let again = try env.qlab("run", file, "--test", "first")
        #expect(again.status == 0, "\(again.output)")
        Self.expectNothingLeft(env, "ctrlc", "after the next run")
    }

    /// SIGTERM while a before_each hook runs: the hook and its background child die
    /// with their group, exit 143, the report says cancelled, nothing left.
    @Test func sigtermDuringAHookKillsItsGroup() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("hooked", tests: "  t: {run: \"true\"}", extra: """
            hooks:
              before_each: "\(CancellationUnitTests.groupHook(env.root))"
            """)
        let json = env.root + "/report.json"
        let run = try BackgroundQLab(env, ["run", file, "--json-report", json])
        #expect(waitUntil(limit: .seconds(300)) { CancellationUnitTests.pids(env.root).count == 2 }, "\(run.stdout)\(run.stderr)")
        let hookPIDs = CancellationUnitTests.pids(env.root)
        #expect(hookPIDs.allSatisfy { ProcessTable.isRunning($0) })
        let status = run.signal(SIGTERM)
        #expect(status == 143, "\(run.stdout)\(run.stderr)")
        for pid in hookPIDs {
            #expect(waitUntil(limit: .seconds(30)) { !ProcessTable.isRunning(pid) }, "pid \(pid) of the hook's group survived")
        }
        let report = try TestReport(path: json)
        #expect(report.results.map(\.outcome) == [.cancelled])
        #expect(report.results.first?.message == "cancelled during before_each")
        Self.expectNothingLeft(env, "hooked", "after SIGTERM")
    }

    /// SIGKILL of `qlab run` gives it no chance to clean up: the supervisor sees its
    /// owner gone and takes QEMU down, with the runtime files and the lock file.
    @Test func sigkillOfRunLetsTheSupervisorTakeTheLabDown() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("orphan", tests: Self.sleeperTests)
        let run = try BackgroundQLab(env, ["run", file, "--test", "sleeper"])
        #expect(waitUntil(limit: .seconds(300)) { Self.sleeping(env, "orphan") }, "\(run.stdout)\(run.stderr)")
        #expect(!env.qemuProcesses().isEmpty)
        #expect(run.signal(SIGKILL) == BackgroundQLab.killedBy + SIGKILL)
        #expect(waitUntil(limit: .seconds(60)) { Self.lingering(env).isEmpty && !FileManager.default.fileExists(atPath: env.runtime("orphan").lockPath) })
        Self.expectNothingLeft(env, "orphan", "after SIGKILL of qlab run")
        let exit = try #require(env.runtime("orphan").exitRecord)
        #expect(exit.requested, "the supervisor asked QEMU to quit")
    }

    /// SIGHUP, then SIGINT during the teardown: the first signal names the exit
    /// status, the second hurries; nothing is left either way.
    @Test func secondSignalDuringTeardownStillLeavesNothing() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("hurry", tests: Self.sleeperTests)
        let json = env.root + "/report.json"
        let run = try BackgroundQLab(env, ["run", file, "--test", "sleeper", "--json-report", json])
        #expect(waitUntil(limit: .seconds(300)) { Self.sleeping(env, "hurry") }, "\(run.stdout)\(run.stderr)")
        kill(run.pid, SIGHUP)
        #expect(waitUntil(limit: .seconds(60)) { run.stderr.contains("SIGHUP: stopping and cleaning up") }, "\(run.stderr)")
        #expect(run.signal(SIGINT) == 129, "\(run.stdout)\(run.stderr)")
        #expect(run.stderr.contains("cancelled by SIGHUP"), "\(run.stderr)")
        #expect(try TestReport(path: json).results.map(\.outcome) == [.cancelled])
        Self.expectNothingLeft(env, "hurry", "after SIGHUP and SIGINT")
    }

    /// An urgent stop request (a second signal) makes `down` skip the quit: SIGKILL.
    @Test func urgentDownKillsAtOnce() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try LifecycleTests.bareLab(env, name: "urgent")
        _ = try await env.controller.up(labFile: file, options: .init())
        let stop = StopRequest()
        stop.request(signal: SIGINT)
        #expect(try await env.controller.down("urgent", stop: stop) == .stopped(method: "quit"), "one request: the graceful way")
        _ = try await env.controller.up(labFile: file, options: .init())
        stop.request(signal: SIGINT)
        #expect(try await env.controller.down("urgent", stop: stop) == .stopped(method: "SIGKILL"))
        #expect(env.runtime("urgent").exitRecord?.exit == .signaled(SIGKILL))
        Self.expectNothingLeft(env, "urgent", "after an urgent down")
    }

    /// SIGINT of `qlab nested run` while L1 boots: L1 is taken down, exit 130.
    @Test func sigintOfNestedRunTakesL1Down() async throws {
        try RunLoopTests.requireImages()
        guard NestedBenchTests.haveBenchImage else {
            Issue.record("images/out/bench is missing: run images/build.sh")
            return
        }
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let run = try BackgroundQLab(env, ["nested", "run", "doctor", "--lab", NestedBenchTests.benchLab])
        #expect(waitUntil(limit: .seconds(120)) { env.qemuProcesses().count == 1 }, "\(run.stdout)\(run.stderr)")
        #expect(run.signal(SIGINT) == 130, "\(run.stdout)\(run.stderr)")
        Self.expectNothingLeft(env, "nested-bench", "after SIGINT of nested run")
    }

    /// A lab from `qlab up` outlives its command; while one `qlab exec` has the console, a
    /// second is refused at once as busy (exit 4) naming the first (command, pid, since);
    /// SIGTERM of `qlab exec` stops only the exec (exit 143) and the lab stays up and usable,
    /// its console free for the next exec.
    @Test func upOutlivesItsCommandAndExecCancelStopsOnlyTheExec() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("kept", tests: "  none: {run: \"true\"}")
        let up = try env.qlab("up", file)
        #expect(up.status == 0, "\(up.output)")
        #expect(env.qemuProcesses().count == 1, "QEMU runs on after `qlab up` exited")

        let exec = try BackgroundQLab(env, ["exec", "kept", "--ready", "--timeout", "600", "--", "echo QLAB-SL''EEPING; sleep 1000"])
        #expect(waitUntil(limit: .seconds(300)) { Self.sleeping(env, "kept") }, "\(exec.stdout)\(exec.stderr)")
        let first = LabHolder(command: "qlab exec kept --ready --timeout 600 -- echo QLAB-SL''EEPING; sleep 1000", pid: exec.pid)
        first.expectRefused(try env.qlab("exec", "kept", "--", "echo", "second"), saying: "the console of lab kept is in use by ", "a second exec")
        #expect(exec.process.isRunning, "the first exec ended: \(exec.stdout)\(exec.stderr)")
        #expect(exec.signal(SIGTERM) == 143, "\(exec.stdout)\(exec.stderr)")
        #expect(exec.stderr.contains("cancelled by SIGTERM"), "\(exec.stderr)")

        let status = try env.qlab("status", "kept")
        #expect(status.stdout.hasPrefix("kept: running"), "\(status.output)")
        // The sleep was interrupted: the console answers the next command.
        let next = try env.qlab("exec", "kept", "--", "echo", "still-here")
        #expect(next.status == 0 && next.stdout.contains("still-here"), "\(next.output)")
        #expect(try env.qlab("down", "kept").status == 0)
        Self.expectNothingLeft(env, "kept", "after down")
    }

    /// SIGTERM of `qlab unplug` while it waits for a guest that never releases the
    /// card (no OS: the firmware does not eject it): exit 143, the lab runs on, and
    /// the next unplug completes with a reset.
    @Test func sigtermOfUnplugStopsItsWait() async throws {
        try RunLoopTests.requireImages()
        let env = try DeviceLabFixture()
        defer { env.cleanUp() }
        let file = try env.bareLab()
        let up = try env.qlab("up", file)
        #expect(up.status == 0, "\(up.output)")
        let plugged = try env.qlab("hotplug", "bare-dev", "scsi-am")
        #expect(plugged.status == 0, "\(plugged.output)")
        let trace = env.root + "/unplug-trace.jsonl"
        let unplug = try BackgroundQLab(env, ["unplug", "bare-dev", "scsi-am", "--timeout", "600", "--no-reset-fallback", "--trace-qmp", trace])
        // QEMU's answer to device_del is the last QMP message before the wait for DEVICE_DELETED.
        #expect(waitUntil(limit: .seconds(60)) { Self.answeredDeviceDel(trace) }, "\(unplug.stdout)\(unplug.stderr)")
        #expect(unplug.signal(SIGTERM) == 143, "\(unplug.stdout)\(unplug.stderr)")
        #expect(unplug.stderr.contains("cancelled by SIGTERM"), "\(unplug.stderr)")
        #expect(try env.qlab("status", "bare-dev").stdout.hasPrefix("bare-dev: running"))
        let again = try env.qlab("unplug", "bare-dev", "scsi-am", "--reset")
        #expect(again.status == 0, "\(again.output)")
        #expect(try env.qlab("down", "bare-dev").status == 0)
        Self.expectNothingLeft(env, "bare-dev", "after down")
    }

    /// Whether the QMP trace at `path` holds QEMU's reply to a `device_del` (a reply line after the command's line).
    static func answeredDeviceDel(_ path: String) -> Bool {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return false }
        let lines = text.split(separator: "\n")
        guard let sent = lines.firstIndex(where: { $0.contains("\"device_del\"") && $0.contains("\"direction\":\"out\"") }) else { return false }
        return lines[(sent + 1)...].contains { $0.contains("\"direction\":\"in\"") && $0.contains("\"return\"") }
    }

    /// SIGTERM of `qlab up --foreground`: QEMU is taken down, exit 143, nothing left.
    @Test func sigtermOfUpForegroundLeavesNothing() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("fg", tests: "  none: {run: \"true\"}")
        let up = try BackgroundQLab(env, ["up", "--foreground", file])
        #expect(waitUntil(limit: .seconds(120)) { up.stdout.contains("lab fg up:") }, "\(up.stdout)\(up.stderr)")
        #expect(env.qemuProcesses().count == 1)
        #expect(up.signal(SIGTERM) == 143, "\(up.stdout)\(up.stderr)")
        #expect(up.stderr.contains("cancelled by SIGTERM"), "\(up.stderr)")
        Self.expectNothingLeft(env, "fg", "after SIGTERM of up --foreground")
        #expect(env.runtime("fg").exitRecord?.requested == true)
    }
}
