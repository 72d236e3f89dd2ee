import Foundation
import QMP
import Testing

/// The client against a real QEMU (`-S`, no guest code before `cont`).
@Suite("QMP client against real QEMU")
struct QMPClientQEMUTests {
    @Test func greetingAndNegotiation() async throws {
        let qemu = try TestQEMU()
        defer { qemu.terminate() }
        let client = try await qemu.connect(negotiate: false)
        defer { client.close() }
        let greeting = try await client.greeting()
        let (major, minor, micro) = try TestQEMU.installedVersion()
        #expect(greeting.version.major == major)
        #expect(greeting.version.minor == minor)
        #expect(greeting.version.micro == micro)
        #expect(greeting.capabilities.contains("oob"))
        // Before negotiation QEMU accepts only qmp_capabilities.
        await #expect(throws: QMPError.self) { _ = try await client.execute("query-status") }
        try await client.negotiate(enableOOB: true)
        let version = try await client.queryVersion()
        #expect(version == greeting.version)
    }

    @Test func queryStatusAndStopContEvents() async throws {
        let qemu = try TestQEMU()
        defer { qemu.terminate() }
        let client = try await qemu.connect()
        defer { client.close() }
        let initial = try await client.queryStatus()
        #expect(initial.status == "prelaunch")
        #expect(initial.running == false)

        let mark = client.eventMark()
        try await client.cont()
        let resume = try await client.waitForEvent("RESUME", after: mark, timeout: .seconds(10))
        #expect(resume.sequence > mark.sequence)
        #expect(try await client.queryStatus().running)

        try await client.stop()
        // The STOP event may arrive before stop's reply; the wait must still find it.
        try await Task.sleep(for: .milliseconds(50))
        let stop = try await client.waitForEvent("STOP", timeout: .seconds(10))
        #expect(stop.sequence > resume.sequence)
        #expect(try await client.queryStatus().status == "paused")
    }

    @Test func errorsCarryQMPClass() async throws {
        let qemu = try TestQEMU()
        defer { qemu.terminate() }
        let client = try await qemu.connect()
        defer { client.close() }
        do {
            _ = try await client.execute("no-such-command")
            Issue.record("expected CommandNotFound")
        } catch let error as QMPError {
            #expect(error.errorClass == "CommandNotFound")
        }
        do {
            try await client.deviceAdd(driver: "no-such-driver", id: "x")
            Issue.record("expected GenericError")
        } catch let error as QMPError {
            #expect(error.errorClass == "GenericError")
            #expect(error.description.contains("no-such-driver"))
        }
        do {
            try await client.deviceDel(id: "absent")
            Issue.record("expected DeviceNotFound")
        } catch let error as QMPError {
            #expect(error.errorClass == "DeviceNotFound")
        }
    }

    @Test func largeSchemaReply() async throws {
        let qemu = try TestQEMU()
        defer { qemu.terminate() }
        let client = try await qemu.connect()
        defer { client.close() }
        let schema = try await client.execute("query-qmp-schema")
        let entries = try #require(schema.arrayValue)
        #expect(entries.count > 500)
        let bytes = try schema.serialized()
        #expect(bytes.count > 100_000)
        // Every entry is an object with a name and meta-type, as QAPI specifies.
        #expect(entries.allSatisfy { $0["name"]?.stringValue != nil && $0["meta-type"]?.stringValue != nil })
        #expect(entries.contains { $0["name"]?.stringValue == "query-status" })
    }

    @Test func thousandConcurrentCommandsGetTheirOwnReplies() async throws {
        let qemu = try TestQEMU()
        defer { qemu.terminate() }
        let client = try await qemu.connect()
        defer { client.close() }
        // Each option name has its own, distinct reply.
        let all = try await client.execute("query-command-line-options")
        let names = try #require(all.arrayValue).compactMap { $0["option"]?.stringValue }.sorted()
        #expect(names.count > 10)
        var expected: [String: JSONValue] = [:]
        for name in names {
            expected[name] = try await client.execute("query-command-line-options", arguments: ["option": .string(name)])
        }
        let replies = expected
        let mismatches = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<1000 {
                let name = names[index % names.count]
                group.addTask {
                    let reply = try await client.execute("query-command-line-options", arguments: ["option": .string(name)])
                    return reply == replies[name] ? 0 : 1
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(mismatches == 0)
    }

    @Test func killedQEMUFailsPendingCommandAtOnce() async throws {
        let qemu = try TestQEMU()
        defer { qemu.terminate() }
        let sent = SentCommands()
        let client = try await QMPClient.connect(path: qemu.socketPath, tracer: sent)
        defer { client.close() }
        // Freeze QEMU so the command stays pending, then kill it once the client sent it.
        kill(qemu.pid, SIGSTOP)
        async let reply = client.execute("query-status", timeout: .seconds(60))
        #expect(await sent.wait(for: "query-status"), "the client never sent query-status")
        kill(qemu.pid, SIGKILL)
        do {
            _ = try await reply
            Issue.record("expected the pending command to fail")
        } catch let error as QMPError {
            guard case .disconnected(let reason) = error else {
                Issue.record("expected .disconnected, got \(error)")
                return
            }
            #expect(reason.contains("query-status"))
        }
        #expect(client.closedReason != nil)
        // Later calls fail at once too.
        await #expect(throws: QMPError.self) { _ = try await client.execute("query-status") }
    }

    @Test func humanMonitorCommandValidated() async throws {
        let qemu = try TestQEMU()
        defer { qemu.terminate() }
        let client = try await qemu.connect()
        defer { client.close() }
        let output = try await client.humanMonitorCommand(try HMPCommand("info", ["status"]))
        #expect(output.contains("prelaunch"))
        #expect(throws: HMPValidationError.self) { try HMPCommand("savevm", ["a; quit"]) }
        #expect(throws: HMPValidationError.self) { try HMPCommand("quit") }
        #expect(throws: HMPValidationError.self) { try HMPCommand.validateSnapshotTag("123") }
        #expect(throws: HMPValidationError.self) { try HMPCommand.validateSnapshotTag("a b") }
        try HMPCommand.validateSnapshotTag("qlab-ready")
    }

    @Test func eventStreamDeliversInOrder() async throws {
        let qemu = try TestQEMU()
        defer { qemu.terminate() }
        let client = try await qemu.connect()
        defer { client.close() }
        let stream = client.events()
        for _ in 0..<3 {
            try await client.cont()
            try await client.stop()
        }
        // The six events, or what came before the deadline: a lost event fails, it does not hang.
        let names = await withTaskGroup(of: [String]?.self) { group in
            group.addTask {
                var names: [String] = []
                for await event in stream {
                    names.append(event.name)
                    if names.count == 6 { break }
                }
                return names
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(30))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        #expect(names == ["RESUME", "STOP", "RESUME", "STOP", "RESUME", "STOP"])
    }
}

/// A tracer that lets a test wait until the client has sent a command.
final class SentCommands: QMPTracer, @unchecked Sendable {
    private let stream: AsyncStream<String>
    private let continuation: AsyncStream<String>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: String.self)
    }

    func record(_ direction: QMPTraceDirection, _ message: JSONValue) {
        if direction == .sent, let command = message["execute"]?.stringValue ?? message["exec-oob"]?.stringValue {
            continuation.yield(command)
        }
    }

    /// True once `command` was sent; false after `timeout`.
    func wait(for command: String, timeout: Duration = .seconds(20)) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { [stream] in
                for await sent in stream where sent == command { return true }
                return false
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }
}
