import Foundation
import LabCore
import QMP
import Testing

/// `qlab run --retry-errors N` with real QEMU (TCG) and the test guest: an
/// error that happens once (a host hook, QEMU that does not start) is retried
/// and the entry passes with its attempts kept; errors that stay give exit 5,
/// a failed test beside them exit 1.
@Suite("qlab run --retry-errors (real guest)", .serialized)
struct RetryRunTests {
    /// A `before_each` that logs `TEST ATTEMPT` and fails (exit 3, "no card") for
    /// the tests in `failing` while the marker file `MARKER-TEST-REPEAT` is absent,
    /// creating it: once per entry; `always`: tests it fails for every time.
    static func hooks(log: String, marker: String, failing: String = "flaky", always: String = "none") -> String {
        """
        hooks:
          before_each: >-
            echo "$QLAB_TEST#$QLAB_REPEAT $QLAB_ATTEMPT $QLAB_WORKER" >> \(log);
            case " \(always) " in *" $QLAB_TEST "*) echo "no card at all"; exit 4;; esac;
            case " \(failing) " in *" $QLAB_TEST "*)
            if [ ! -e "\(marker)-$QLAB_TEST-$QLAB_REPEAT" ]; then touch "\(marker)-$QLAB_TEST-$QLAB_REPEAT"; echo "no card"; exit 3; fi;; esac
        """
    }

    static let tests = """
          flaky: {run: "echo flaky", expect: flaky}
          steady: {run: "echo steady", expect: steady}
        """

    /// One test's set-up: the guest images, a test environment (`cleanUp()` at the end) and
    /// the hook's log; `lab` writes a lab of the test guest whose hooks fail as ``hooks`` says.
    struct Fixture {
        let env: QLabTestEnvironment
        var log: String { env.root + "/hook.log" }

        init() throws {
            try RunLoopTests.requireImages()
            env = try QLabTestEnvironment()
        }

        func lab(_ name: String, tests: String = RetryRunTests.tests, failing: String = "flaky", always: String = "none") throws -> String {
            try env.writeGuestLab(name, devices: "  {}", tests: tests, extra: RetryRunTests.hooks(log: log, marker: env.root + "/mark", failing: failing, always: always))
        }

        /// The run loop in this process, `retries` retries and what `configure` sets.
        func run(_ file: String, retries: Int, notes: NoteLog = NoteLog(), _ configure: (inout TestRunner.Options) -> Void = { _ in }) async throws -> TestReport {
            var options = TestRunner.Options()
            options.retries = retries
            configure(&options)
            return try await TestRunner(controller: env.controller, labFile: file, options: options) { notes.take($0) }.run()
        }

        var hookLines: [String] { RetryRunTests.lines(log) }
        func cleanUp() { env.cleanUp() }
    }

    static func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// The hook fails the first time: the entry runs again from a fresh revert and passes;
    /// the error is its first attempt; no second boot; the other entry runs once.
    @Test func anErrorOnceIsRetriedFromAFreshRevert() async throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let notes = NoteLog()
        let report = try await fixture.run(try fixture.lab("retry"), retries: 2, notes: notes)
        #expect(report.results.map(\.outcome) == [.passed, .passed], "\(report.results.map(\.message))")
        let flaky = try #require(report.results.first)
        #expect(flaky.attempts.map(\.outcome) == [.error])
        #expect(flaky.attempts.first?.message.hasPrefix("before_each hook failed (") == true, "\(flaky.attempts.first?.message ?? "")")
        #expect(flaky.attempts.first?.message.contains("no card") == true)
        #expect(flaky.attempts.first?.steps.map(\.name) == ["before_each"])
        // The second attempt: before_each, then a revert to the ready snapshot, then the test.
        #expect(flaky.steps.map(\.name).filter { !$0.hasPrefix("revert") } == ["before_each", "test"], "\(flaky.steps.map(\.name))")
        #expect(flaky.steps.contains { $0.name.hasPrefix("revert") })
        #expect(report.results[1].retried == false)
        #expect(fixture.hookLines == ["flaky#1 1 retry", "flaky#1 2 retry", "steady#1 1 retry"])
        #expect(report.boots.count == 1, "a hook's error needs no new boot")
        #expect(report.verdict.rawValue == 0)
        #expect(notes.lines.contains { $0.hasPrefix("retrying linux flaky (attempt 2 of at most 3) after error: before_each hook failed") }, "\(notes.lines)")
        #expect(fixture.env.qemuProcesses().isEmpty)
    }

    /// QEMU does not start the first time (a wrapper that exits 1 once): the entry's
    /// retry boots afresh and passes; the failed boot is its first attempt, not a
    /// `boot` entry of its own; `boots` lists both.
    @Test func aBootThatFailsOnceIsRetriedWithAFreshBoot() async throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let env = fixture.env
        let wrapper = env.root + "/qemu-once"
        let marker = env.root + "/qemu-failed"
        // Only a launch (with -name) fails, once: capability probes go through.
        try """
            #!/bin/sh
            case " $* " in *" -name "*) if [ ! -e \(marker) ]; then touch \(marker); echo "qemu-once: no such card (simulated)" >&2; exit 1; fi;; esac
            exec /usr/bin/qemu-system-x86_64 "$@"

            """.write(toFile: wrapper, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: wrapper)
        let file = try env.writeGuestLab("bootretry", devices: "  {}", tests: "  steady: {run: \"echo steady\", expect: steady}", extra: "qemu: \(wrapper)")
        let report = try await fixture.run(file, retries: 1)
        #expect(FileManager.default.fileExists(atPath: marker), "the wrapper's failure happened")
        #expect(report.results.map(\.entry.test) == ["steady"], "no boot entry: the retry booted")
        let steady = try #require(report.results.first)
        #expect(steady.outcome == .passed, "\(steady.message)")
        #expect(steady.attempts.map(\.outcome) == [.error])
        let first = try #require(steady.attempts.first)
        #expect(first.message.hasPrefix("guest linux did not boot: QEMU did not start"), "\(first.message)")
        #expect(first.qemuOutput.contains("qemu-once: no such card (simulated)"), "\(first.qemuOutput)")
        #expect(first.steps.map(\.name) == ["boot"])
        #expect(report.boots.map(\.ready) == [false, true])
        #expect(env.qemuProcesses().isEmpty)
    }

    /// The command: errors left after the retries exit 5, with every attempt in the JSON
    /// and JUnit reports; a failed test beside an error exits 1.
    @Test func exitStatusTellsInfrastructureFromTestFailures() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let env = fixture.env
        let file = try fixture.lab("exits", tests: Self.tests + "\n  bad: {run: \"exit 1\"}", failing: "none", always: "flaky")
        let json = env.root + "/report.json", junit = env.root + "/junit.xml"
        let infra = try env.qlab("run", file, "--test", "steady", "--test", "flaky", "--retry-errors", "1", "--json-report", json, "--junit", junit)
        #expect(infra.status == 5, "\(infra.output)")
        #expect(infra.stdout.contains("1 passed, 1 error"), "\(infra.stdout)")
        #expect(infra.stdout.contains("note: retrying linux flaky (attempt 2 of at most 2) after error"), "\(infra.stdout)")
        #expect(infra.stdout.contains("linux flaky: ERROR") && infra.stdout.contains("(attempt 2)"), "\(infra.stdout)")
        let report = try TestReport(path: json)
        let flaky = try #require(report.results.first { $0.entry.test == "flaky" })
        #expect(flaky.outcome == .error && flaky.attempts.map(\.outcome) == [.error])
        let raw = try JSONValue.parse(Array(FileManager.default.contents(atPath: json) ?? Data()))
        let attempts = raw["results"]?.arrayValue?.first { $0["test"]?.stringValue == "flaky" }?["attempts"]?.arrayValue ?? []
        #expect(attempts.map { $0["attempt"]?.intValue } == [1, 2])
        #expect(attempts.allSatisfy { $0["message"]?.stringValue?.contains("no card at all") == true })
        let xml = try XMLTree.parse(String(contentsOfFile: junit, encoding: .utf8))
        let flakyCase = try #require(xml.descendants("testcase").first { $0.attributes["name"] == "flaky" })
        #expect(flakyCase.children.map(\.name).filter { $0 != "properties" && $0 != "system-out" } == ["error", "rerunError"])
        #expect(fixture.hookLines.filter { $0.hasPrefix("flaky") }.map { $0.split(separator: " ")[1] } == ["1", "2"])

        // A test that failed wins over the error beside it; without --retry-errors nothing reruns.
        let failed = try env.qlab("run", file, "--test", "flaky", "--test", "bad")
        #expect(failed.status == 1, "\(failed.output)")
        #expect(failed.stdout.contains("1 failed, 1 error"), "\(failed.stdout)")
        #expect(!failed.stdout.contains("retrying"))
        // --retry-on needs --retry-errors; an outcome it cannot retry is refused.
        #expect(try env.qlab("run", file, "--retry-on", "timeout").status == 2)
        #expect(try env.qlab("run", file, "--retry-errors", "1", "--retry-on", "error,passed").status == 2)
        #expect(env.qemuProcesses().isEmpty)
    }

    /// `--jobs 2 --repeat 2`: each repeat's first attempt fails in the hook, on
    /// whichever worker takes it; every entry passes on its second attempt.
    @Test func retriesWorkWithJobsAndRepeats() async throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let report = try await fixture.run(try fixture.lab("retryjobs"), retries: 1) {
            $0.jobs = 2
            $0.repeats = 2
        }
        #expect(report.results.map(\.outcome) == [.passed, .passed, .passed, .passed], "\(report.results.map(\.message))")
        #expect(report.results.map(\.entry.displayName) == ["flaky", "flaky#2", "steady", "steady#2"])
        #expect(report.results.map(\.attempts.count) == [1, 1, 0, 0])
        #expect(report.results.allSatisfy { $0.worker != nil })
        #expect(report.results.flatMap(\.attempts).allSatisfy { $0.worker != nil && $0.outcome == .error })
        let attempts = fixture.hookLines.filter { $0.hasPrefix("flaky") }.map { $0.split(separator: " ").prefix(2).joined(separator: " ") }.sorted()
        #expect(attempts == ["flaky#1 1", "flaky#1 2", "flaky#2 1", "flaky#2 2"])
        #expect(fixture.env.qemuProcesses().isEmpty)
    }
}

/// The notes a run printed.
final class NoteLog: @unchecked Sendable {
    private let lock = NSLock()
    private var notes: [String] = []
    var lines: [String] { lock.withLock { notes } }
    func take(_ event: TestRunEvent) {
        if case .note(let text) = event { lock.withLock { notes.append(text) } }
    }
}
