import Foundation
import Platform
import Synchronization
import Testing

/// Reaping a child (``ChildProcess/reap()``, ``ChildProcess/killAndReap()``)
/// holds no cooperative-pool thread (issue 19): more children are reaped at
/// once than the pool has threads, and a task queued after them still runs
/// and is what lets the children end.
@Suite("Reaping children off the cooperative pool")
struct OffPoolReapTests {
    /// What happened, in order, shared by the tasks and the deadline.
    final class Log: Sendable {
        let events = Mutex<[String]>([])
        let done = Mutex(false)
    }

    @Test func moreReapsThanPoolThreadsLeaveThePoolFree() async throws {
        let count = max(4, 3 * ProcessInfo.processInfo.activeProcessorCount)
        let (readEnd, writeEnd) = try FileDescriptor.pipeCloseOnExec()
        defer { readEnd.closeIgnoringErrors() }
        // Each child ends once it has read one line: only the writer below ends them.
        var children: [ChildProcess] = []
        for _ in 0..<count {
            children.append(try ChildProcess.spawn(executable: "/bin/sh", arguments: ["-c", "read line"], stdin: .descriptor(readEnd.rawValue)))
        }
        let log = Log()
        // The deadline, outside the pool: if reaping blocked the pool the
        // writer would never run; the children are killed and the order shows it.
        let pids = children.map(\.pid)
        DispatchQueue.global().asyncAfter(deadline: .now() + 60) {
            guard !log.done.withLock({ $0 }) else { return }
            for pid in pids { kill(pid, SIGKILL) }
        }
        let exits = await withTaskGroup(of: ProcessExit?.self) { group in
            for child in children {
                group.addTask {
                    let exit = await child.reap()
                    log.events.withLock { $0.append("reaped") }
                    return exit
                }
            }
            group.addTask {
                log.events.withLock { $0.append("wrote") }
                _ = try? writeEnd.writeEvery(Array(repeating: UInt8(ascii: "\n"), count: count), what: "the children's pipe")
                writeEnd.closeIgnoringErrors()
                return nil
            }
            var exits: [ProcessExit] = []
            for await exit in group { if let exit { exits.append(exit) } }
            return exits
        }
        log.done.withLock { $0 = true }
        #expect(log.events.withLock { $0.first } == "wrote", "the writer ran only after reaps returned: \(log.events.withLock { $0 })")
        #expect(exits.count == count)
        #expect(exits.allSatisfy { $0 == .exited(0) }, "\(exits)")
    }

    @Test func killAndReapEndsAndReapsAChild() async throws {
        let child = try ChildProcess.spawn(executable: "/bin/sleep", arguments: ["300"])
        let exit = await child.killAndReap()
        #expect(exit == .signaled(SIGKILL))
        // Reaped: no zombie of it is left.
        #expect(!ProcessTable.exists(child.pid))
    }
}
