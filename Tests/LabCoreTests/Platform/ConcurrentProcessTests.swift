import Foundation
import LabCore
import Platform
import Testing

/// Hooks wait for their child without holding a cooperative-pool thread
/// (issue 11): more hooks than the pool has threads all run at once.
@Suite("Processes do not block the cooperative pool (issue 11)")
struct ConcurrentProcessTests {
    /// Each hook marks itself started, then waits until every hook has started.
    /// If a waiting hook held a pool thread, the hooks beyond the pool's width
    /// would never start and the others would reach their (safety) timeout.
    @Test func moreHooksThanPoolThreadsRunAtOnce() async throws {
        let dir = try LabTempDirectory("hooks")
        defer { dir.remove() }
        let count = ProcessInfo.processInfo.activeProcessorCount + 2
        let script = "touch started.$N; while [ \"$(ls | grep -c '^started\\.')\" -lt \(count) ]; do sleep 0.05; done"
        let outcomes = try await withThrowingTaskGroup(of: CapturedRun.self) { group in
            for n in 0..<count {
                group.addTask {
                    try await HostHook.run(script, directory: dir.path, environment: ["N": "\(n)", "PATH": "/usr/bin:/bin"], timeout: .seconds(60))
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.count == count)
        for outcome in outcomes {
            #expect(outcome.succeeded, "hook ended \(String(describing: outcome.exit)), timed out: \(outcome.timedOut): \(outcome.output)")
        }
        let markers = (try FileManager.default.contentsOfDirectory(atPath: dir.path)).filter { $0.hasPrefix("started.") }
        #expect(markers.count == count)
    }

    /// The output of a child is captured through the pidfd-driven wait, also
    /// when a background grandchild keeps the pipe open after the child exits.
    @Test func capturesOutputAndEndsWithTheChild() async throws {
        let run = try await CapturedRun.run(["/bin/sh", "-c", "echo one; echo two >&2; (sleep 30 >/dev/null 2>&1 &); exit 3"])
        #expect(run.exit == .exited(3))
        #expect(run.output == "one\ntwo\n")
        #expect(!run.timedOut && !run.cancelled)
        let blocking = try CapturedRun.runBlocking(["/bin/sh", "-c", "echo sync"])
        #expect(blocking.succeeded && blocking.output == "sync\n")
    }
}
