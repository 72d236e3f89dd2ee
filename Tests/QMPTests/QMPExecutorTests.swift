import Foundation
import QMP
import Testing

/// The client used from tasks that prefer its reader thread's executor
/// (`withPreferredExecutor`): everything must work as on the cooperative
/// pool, and no job may be stranded when the reader ends.
@Suite("QMP client on its reader thread's executor")
struct QMPExecutorTests {
    @Test func commandsAndEventsRunOnTheReaderThread() async throws {
        let qemu = try TestQEMU()
        defer { qemu.terminate() }
        let client = try await qemu.connect()
        defer { client.close() }
        #expect(!client.executor.isCurrentThread)
        try await client.withPreferredExecutor {
            let status = try await client.queryStatus()
            #expect(status.status == "prelaunch")
            // Resumed by the reply on the thread that read it.
            #expect(client.executor.isCurrentThread)
            // A timer resumes the task from another thread: the job wakes the reader's poll.
            try await Task.sleep(for: .milliseconds(20))
            #expect(client.executor.isCurrentThread)

            let stream = client.events()
            let mark = client.eventMark()
            try await client.cont()
            let resume = try await client.waitForEvent("RESUME", after: mark, timeout: .seconds(10))
            #expect(resume.sequence > mark.sequence)
            try await client.stop()
            var seen: [String] = []
            for await event in stream {
                seen.append(event.name)
                if seen.count == 2 { break }
            }
            #expect(seen == ["RESUME", "STOP"])
            #expect(try await client.queryStatus().status == "paused")
            #expect(client.executor.isCurrentThread)

            // Child tasks inherit the preference; concurrent replies still
            // reach their own commands (each option has a distinct reply).
            let all = try await client.execute("query-command-line-options")
            let names = try #require(all.arrayValue).compactMap { $0["option"]?.stringValue }.sorted()
            #expect(names.count > 10)
            var expected: [String: JSONValue] = [:]
            for name in names {
                expected[name] = try await client.execute("query-command-line-options", arguments: ["option": .string(name)])
            }
            let replies = expected
            let (mismatches, offReader) = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
                for index in 0..<500 {
                    let name = names[index % names.count]
                    group.addTask {
                        let reply = try await client.execute("query-command-line-options", arguments: ["option": .string(name)])
                        return (reply == replies[name] ? 0 : 1, client.executor.isCurrentThread ? 0 : 1)
                    }
                }
                return try await group.reduce((0, 0)) { ($0.0 + $1.0, $0.1 + $1.1) }
            }
            #expect(mismatches == 0)
            #expect(offReader == 0)
        }
    }

    @Test func timeoutsFireOnTheReaderThread() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        server.run { s in
            s.handshake()
            _ = s.readMessage()  // and never answer
        }
        let client = try await QMPClient.adopt(fd: server.clientFD)
        defer { client.close() }
        await client.withPreferredExecutor {
            await #expect(throws: QMPError.timeout(command: "query-status", seconds: 0.3)) {
                _ = try await client.execute("query-status", timeout: .milliseconds(300))
            }
            #expect(client.executor.isCurrentThread)
            await #expect(throws: QMPError.timeout(command: "waiting for event RESET", seconds: 0.2)) {
                _ = try await client.waitForEvent("RESET", timeout: .milliseconds(200))
            }
            #expect(client.executor.isCurrentThread)
        }
    }

    @Test func lateReplyAfterTimeoutReachesNoOtherCommand() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        let ids = IDLog()
        server.run { s in
            s.handshake()
            let first = s.readMessage()  // answered only after the second
            let second = s.readMessage()
            ids.record(first?["id"], second?["id"])
            s.reply(to: first, "late")
            s.reply(to: second, "second")
        }
        let client = try await QMPClient.adopt(fd: server.clientFD)
        defer { client.close() }
        try await client.withPreferredExecutor {
            await #expect(throws: QMPError.timeout(command: "query-first", seconds: 0.2)) {
                _ = try await client.execute("query-first", timeout: .milliseconds(200))
            }
            let reply = try await client.execute("query-second")
            #expect(reply == "second")
        }
        let (first, second) = ids.values
        #expect(first != nil && first != second)
    }

    @Test func disconnectFailsPendingCallsAndWorkGoesOnElsewhere() async throws {
        let qemu = try TestQEMU()
        defer { qemu.terminate() }
        let client = try await qemu.connect()
        defer { client.close() }
        try await client.withPreferredExecutor {
            _ = try await client.queryStatus()
            #expect(client.executor.isCurrentThread)
            kill(qemu.pid, SIGSTOP)
            // Child tasks (they inherit the preference) wait while QEMU is frozen, then killed.
            let failures = await withTaskGroup(of: QMPError?.self) { group in
                group.addTask {
                    do { _ = try await client.execute("query-status", timeout: .seconds(60)) } catch { return error as? QMPError }
                    return nil
                }
                group.addTask {
                    do { _ = try await client.waitForEvent("SHUTDOWN", timeout: .seconds(60)) } catch { return error as? QMPError }
                    return nil
                }
                try? await Task.sleep(for: .milliseconds(200))
                kill(qemu.pid, SIGKILL)
                return await group.reduce(into: []) { $0.append($1) }
            }
            #expect(failures.count == 2)
            for failure in failures {
                guard case .disconnected = failure else {
                    Issue.record("expected .disconnected, got \(String(describing: failure))")
                    continue
                }
            }
            #expect(client.closedReason != nil)
            // The reader has ended: this task now runs on the global executor.
            #expect(!client.executor.isCurrentThread)
            await #expect(throws: QMPError.self) { _ = try await client.execute("query-status") }
        }
        #expect(client.closedReason != nil)
    }

    @Test func closeFromTheReaderThread() async throws {
        let qemu = try TestQEMU()
        defer { qemu.terminate() }
        let client = try await qemu.connect()
        try await client.withPreferredExecutor {
            _ = try await client.queryStatus()
            #expect(client.executor.isCurrentThread)
            client.close()
            // `.closed` was delivered before close returned, on this very thread.
            #expect(client.closedReason != nil)
            await #expect(throws: QMPError.self) { _ = try await client.execute("query-status") }
            try await Task.sleep(for: .milliseconds(10))
            #expect(!client.executor.isCurrentThread)
        }
        client.close()  // again, from elsewhere: returns at once
    }

    @Test func lastReferenceDroppedOnTheReaderThread() async throws {
        let qemu = try TestQEMU()
        defer { qemu.terminate() }
        var client: QMPClient? = try await qemu.connect()
        weak let weakClient = client
        let executor = client!.executor
        try await withTaskExecutorPreference(executor) {
            _ = try await client!.queryStatus()
            #expect(executor.isCurrentThread)
            client = nil  // deinit closes the channel on its own reader thread
            #expect(weakClient == nil)
            try await Task.sleep(for: .milliseconds(10))
            #expect(!executor.isCurrentThread)
        }
        // QEMU saw the connection go: a new client can connect to its one-client monitor.
        let next = try await qemu.connect()
        defer { next.close() }
        #expect(try await next.queryStatus().status == "prelaunch")
    }
}

/// Ids the fake server saw, handed from its thread to the test.
final class IDLog: @unchecked Sendable {
    private let lock = NSLock()
    private var ids: [JSONValue?] = []

    func record(_ ids: JSONValue?...) {
        lock.withLock { self.ids += ids }
    }

    var all: [JSONValue?] { lock.withLock { ids } }
    var values: (JSONValue?, JSONValue?) { lock.withLock { (ids.first ?? nil, ids.dropFirst().first ?? nil) } }
}

@Suite("QMP client cancellation")
struct QMPCancellationTests {
    /// Cancelling a command, before it is sent or while QEMU has it, ends
    /// the call with `.cancelled`, on the reader thread as on the pool; the
    /// reply that still comes reaches no later command.
    @Test(arguments: [true, false]) func cancelledCommandsEndAndTheirRepliesGoNowhere(preferReaderThread: Bool) async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        let received = IDLog()
        server.run { s in
            s.handshake()
            let first = s.readMessage()  // the one cancelled while pending
            received.record(first?["id"])
            let next = s.readMessage()
            s.reply(to: first, "late")
            s.reply(to: next, "next")
        }
        let client = try await QMPClient.adopt(fd: server.clientFD)
        defer { client.close() }
        let executor: ReaderThreadExecutor? = preferReaderThread ? client.executor : nil
        try await withTaskExecutorPreference(executor) {
            // Cancelled before the call: nothing is sent.
            let early = Task(executorPreference: executor) {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await client.execute("query-never-sent", timeout: .seconds(60))
            }
            await #expect(throws: QMPError.cancelled) { _ = try await early.value }
            let earlyWait = Task(executorPreference: executor) {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await client.waitForEvent("NEVER", timeout: .seconds(60))
            }
            await #expect(throws: QMPError.cancelled) { _ = try await earlyWait.value }

            // Cancelled while QEMU has it.
            let pending = Task(executorPreference: executor) {
                try await client.execute("query-first", timeout: .seconds(60))
            }
            while received.all.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
            pending.cancel()
            await #expect(throws: QMPError.cancelled) { _ = try await pending.value }
            #expect(try await client.execute("query-next") == "next")
        }
    }
}
