import Foundation
import LabCore
import Platform
import QMP
import Synchronization
import Testing

/// A fake qemu-ga on one end of a socketpair: reads newline-framed JSON
/// (skipping the 0xFF sync bytes), hands each request to `respond`, and
/// writes the bytes it returns.
final class FakeAgent: @unchecked Sendable {
    let agentFD: Int32
    let clientFD: Int32
    private let requests = Mutex<[JSONValue]>([])
    private let respond: @Sendable (JSONValue) -> [UInt8]?
    private var thread: Thread?

    init(respond: @escaping @Sendable (JSONValue) -> [UInt8]?) throws {
        let (a, b) = try UnixSocket.pair()
        agentFD = a
        clientFD = b
        self.respond = respond
        let thread = Thread { [self] in serve() }
        self.thread = thread
        thread.start()
    }

    /// Every request received, in order.
    var received: [JSONValue] { requests.withLock { $0 } }

    func commands() -> [String] { received.compactMap { $0["execute"]?.stringValue } }

    private func serve() {
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(agentFD, &buffer, buffer.count)
            if n <= 0 { break }
            for byte in buffer[0..<n] where byte != 0xFF {
                if byte != 0x0A {
                    pending.append(byte)
                    continue
                }
                guard let request = try? JSONValue.parse(pending) else { pending = []; continue }
                pending = []
                requests.withLock { $0.append(request) }
                if let reply = respond(request) { _ = reply.withUnsafeBytes { write(agentFD, $0.baseAddress, $0.count) } }
            }
        }
        close(agentFD)
    }

    /// A reply line echoing the request's id.
    static func reply(_ request: JSONValue, _ value: JSONValue, echoID: Bool = true) -> [UInt8] {
        var object: JSONObject = ["return": value]
        if echoID, let id = request["id"] { object["id"] = id }
        return (try! JSONValue.object(object).serialized()) + [0x0A]
    }

    static func error(_ request: JSONValue, _ errorClass: String, _ description: String) -> [UInt8] {
        var object: JSONObject = ["error": ["class": .string(errorClass), "desc": .string(description)]]
        if let id = request["id"] { object["id"] = id }
        return (try! JSONValue.object(object).serialized()) + [0x0A]
    }

    /// The sync reply as qemu-ga sends it: 0xFF, then the id it was given.
    static func syncReply(_ request: JSONValue, echoID: Bool = true) -> [UInt8] {
        [0xFF] + reply(request, request["arguments"]?["id"] ?? .null, echoID: echoID)
    }
}

/// Answers like qemu-ga for one command: exited after `pollsBeforeExit` status polls.
final class ScriptedExec: @unchecked Sendable {
    let pollsBeforeExit: Int
    let status: JSONObject
    let polls = Mutex(0)

    init(pollsBeforeExit: Int = 1, status: JSONObject) {
        self.pollsBeforeExit = pollsBeforeExit
        self.status = status
    }

    func respond(_ request: JSONValue, echoID: Bool = true) -> [UInt8]? {
        switch request["execute"]?.stringValue {
        case "guest-sync-delimited": return FakeAgent.syncReply(request, echoID: echoID)
        case "guest-ping": return FakeAgent.reply(request, .object([:]), echoID: echoID)
        case "guest-exec": return FakeAgent.reply(request, ["pid": 4242], echoID: echoID)
        case "guest-exec-status":
            let count = polls.withLock { n -> Int in
                n += 1
                return n
            }
            if count <= pollsBeforeExit { return FakeAgent.reply(request, ["exited": false], echoID: echoID) }
            var object = status
            object["exited"] = true
            return FakeAgent.reply(request, .object(object), echoID: echoID)
        default: return FakeAgent.error(request, "CommandNotFound", "unknown command")
        }
    }
}

@Suite("Guest agent (fake qemu-ga on a socketpair)")
struct GuestAgentTests {
    @Test func syncPingAndExecWithOutput() async throws {
        let script = ScriptedExec(pollsBeforeExit: 2, status: [
            "exitcode": 0, "out-data": .string(Base64.encode(Array("hello\n".utf8))), "err-data": .string(Base64.encode(Array("warn\n".utf8))),
        ])
        let fake = try FakeAgent { script.respond($0) }
        let agent = try await GuestAgent.adopt(fd: fake.clientFD, timeout: .seconds(5))
        defer { agent.close() }
        try await agent.ping()
        let result = try await agent.run("echo hello; echo warn >&2", timeout: .seconds(10))
        #expect(result.output == "hello\n")
        #expect(result.errorOutput == "warn\n")
        #expect(result.exitStatus == 0)
        #expect(!result.truncated)
        #expect(fake.commands() == ["guest-sync-delimited", "guest-ping", "guest-exec", "guest-exec-status", "guest-exec-status", "guest-exec-status"])
        let exec = try #require(fake.received.first { $0["execute"]?.stringValue == "guest-exec" })
        #expect(exec["arguments"]?["path"]?.stringValue == "/bin/sh")
        #expect(exec["arguments"]?["arg"]?.arrayValue?.compactMap(\.stringValue) == ["-c", "echo hello; echo warn >&2"])
        #expect(exec["arguments"]?["capture-output"]?.boolValue == true)
        let status = try #require(fake.received.last)
        #expect(status["arguments"]?["pid"]?.intValue == 4242)
    }

    @Test func exitCodeAndSignal() async throws {
        let coded = ScriptedExec(status: ["exitcode": 3])
        let fake = try FakeAgent { coded.respond($0) }
        let agent = try await GuestAgent.adopt(fd: fake.clientFD, timeout: .seconds(5))
        defer { agent.close() }
        let result = try await agent.run("exit 3", timeout: .seconds(10))
        #expect(result.exitStatus == 3)
        #expect(result.output == "")

        let killed = ScriptedExec(status: ["signal": 9])
        let fake2 = try FakeAgent { killed.respond($0) }
        let agent2 = try await GuestAgent.adopt(fd: fake2.clientFD, timeout: .seconds(5))
        defer { agent2.close() }
        #expect(try await agent2.run("kill -9 $$", timeout: .seconds(10)).exitStatus == 128 + 9)
    }

    @Test func binaryOutputAndTruncation() async throws {
        let bytes: [UInt8] = Array(0...255) + Array("end".utf8)
        let script = ScriptedExec(status: ["exitcode": 0, "out-data": .string(Base64.encode(bytes)), "out-truncated": true])
        let fake = try FakeAgent { script.respond($0) }
        let agent = try await GuestAgent.adopt(fd: fake.clientFD, timeout: .seconds(5))
        defer { agent.close() }
        let result = try await agent.exec(path: "/bin/cat", arguments: ["/dev/x"], input: Array("in".utf8), timeout: .seconds(10))
        #expect(result.standardOutput == bytes)
        #expect(result.truncated)
        let exec = try #require(fake.received.first { $0["execute"]?.stringValue == "guest-exec" })
        #expect(exec["arguments"]?["input-data"]?.stringValue == "aW4=")
    }

    @Test func garbageAndStaleRepliesBeforeTheDelimiterAreDropped() async throws {
        let script = ScriptedExec(status: ["exitcode": 0, "out-data": .string(Base64.encode(Array("ok".utf8)))])
        let fake = try FakeAgent { request in
            guard request["execute"]?.stringValue == "guest-sync-delimited" else { return script.respond(request) }
            // A stale reply of an earlier client, half a message, then the delimiter and the real reply.
            let stale = FakeAgent.reply(request, 12345, echoID: false)
            return stale + Array("{\"return\": {\"garbage".utf8) + FakeAgent.syncReply(request)
        }
        let agent = try await GuestAgent.adopt(fd: fake.clientFD, timeout: .seconds(5))
        defer { agent.close() }
        #expect(try await agent.run("true", timeout: .seconds(10)).output == "ok")
    }

    @Test func aMalformedReplyFailsThePendingRequestAtOnce() async throws {
        let fake = try FakeAgent { request in
            switch request["execute"]?.stringValue {
            case "guest-sync-delimited": return FakeAgent.syncReply(request)
            // After the delimiter: a window-title escape sequence that is not JSON.
            case "guest-ping": return Array("\u{1B}]0;pwned\u{7}\n".utf8)
            default: return nil
            }
        }
        let agent = try await GuestAgent.adopt(fd: fake.clientFD, timeout: .seconds(5))
        defer { agent.close() }
        do {
            try await agent.ping(timeout: .seconds(600))
            Issue.record("a malformed reply was accepted")
        } catch let error as GuestError {
            guard case .agent(let text) = error else {
                Issue.record("expected an agent error, got \(error)")
                return
            }
            #expect(text.contains("malformed message while guest-ping was pending"))
            #expect(text.contains(#"\x1b]0;pwned\x07"#))
        }
        // The channel is closed: the next request fails at once.
        await #expect(throws: GuestError.self) { try await agent.ping(timeout: .seconds(600)) }
    }

    @Test func garbageLeftByAnEarlierClientInItsOwnReadIsDropped() async throws {
        let script = ScriptedExec(status: ["exitcode": 0])
        let fake = try FakeAgent { script.respond($0) }
        // Waiting in the channel before this client syncs: the tail of a reply half read by someone else.
        let leftover = Array("ial\": 1}}\n".utf8)
        leftover.withUnsafeBytes { _ = write(fake.agentFD, $0.baseAddress, $0.count) }
        let agent = try await GuestAgent.adopt(fd: fake.clientFD, timeout: .seconds(5))
        defer { agent.close() }
        #expect(try await agent.run("true", timeout: .seconds(10)).exitStatus == 0)
    }

    @Test func deadlineFiresWhileTheAgentKeepsTalking() async throws {
        let stop = Mutex(false)
        let streamEnded = Mutex(false)
        let fake = try FakeAgent { request in
            guard request["execute"]?.stringValue == "guest-sync-delimited" else { return nil }
            return FakeAgent.syncReply(request)
        }
        let agent = try await GuestAgent.adopt(fd: fake.clientFD, timeout: .seconds(5))
        defer { agent.close() }
        defer {
            // The writer ends before the channel (and the fake's descriptor) closes.
            stop.withLock { $0 = true }
            while !streamEnded.withLock({ $0 }) { usleep(1_000) }
        }
        // Stale replies (ids nobody waits for) arrive every few milliseconds, for up to a minute.
        let stale = Array(repeating: Array(#"{"return": {}, "id": 999999}"#.utf8) + [0x0A], count: 500).flatMap { $0 }
        Thread {
            let giveUp = ContinuousClock.now + .seconds(60)
            while !stop.withLock({ $0 }) && ContinuousClock.now < giveUp {
                // Batches without a pause: the socket is never empty when the reader polls.
                _ = stale.withUnsafeBytes { write(fake.agentFD, $0.baseAddress, $0.count) }
            }
            streamEnded.withLock { $0 = true }
        }.start()
        do {
            try await agent.ping(timeout: .milliseconds(300))
            Issue.record("expected a timeout")
        } catch let error as GuestError {
            #expect(error.isTimeout, "\(error)")
        }
        #expect(!streamEnded.withLock { $0 })
    }

    @Test func agentThatDoesNotEchoIDs() async throws {
        let script = ScriptedExec(status: ["exitcode": 5])
        let fake = try FakeAgent { script.respond($0, echoID: false) }
        let agent = try await GuestAgent.adopt(fd: fake.clientFD, timeout: .seconds(5))
        defer { agent.close() }
        #expect(try await agent.run("exit 5", timeout: .seconds(10)).exitStatus == 5)
    }

    @Test func hangingCommandTimesOutAndIsKilled() async throws {
        let script = ScriptedExec(pollsBeforeExit: .max, status: [:])
        let fake = try FakeAgent { script.respond($0) }
        let agent = try await GuestAgent.adopt(fd: fake.clientFD, timeout: .seconds(5))
        defer { agent.close() }
        do {
            _ = try await agent.run("sleep 1000", timeout: .seconds(1))
            Issue.record("a command that never exits returned")
        } catch let error as GuestError {
            #expect(error.isTimeout)
            #expect(error.description.contains("sleep 1000"))
        }
        // qlab asked the agent to kill it.
        let execs = fake.received.filter { $0["execute"]?.stringValue == "guest-exec" }
        let kill = try #require(execs.last?["arguments"]?["arg"]?.arrayValue?.last?.stringValue)
        #expect(kill.contains("kill -KILL 4242"))
        // The agent still answers.
        try await agent.ping()
    }

    @Test func silentAgentFailsTheSyncWithAHint() async throws {
        let fake = try FakeAgent { _ in nil }
        do {
            _ = try await GuestAgent.adopt(fd: fake.clientFD, timeout: .milliseconds(300))
            Issue.record("sync with a silent agent succeeded")
        } catch let error as GuestError {
            #expect(error.description.contains("qemu-ga"))
        }
    }

    @Test func agentErrorsAndBadBase64() async throws {
        let fake = try FakeAgent { request in
            switch request["execute"]?.stringValue {
            case "guest-sync-delimited": return FakeAgent.syncReply(request)
            case "guest-exec": return FakeAgent.error(request, "GenericError", "Failed to execute child process \"/bin/sh\"")
            default: return nil
            }
        }
        let agent = try await GuestAgent.adopt(fd: fake.clientFD, timeout: .seconds(5))
        defer { agent.close() }
        await #expect(throws: GuestError.self) { _ = try await agent.run("true", timeout: .seconds(5)) }
        do {
            _ = try await agent.run("true", timeout: .seconds(5))
        } catch {
            #expect("\(error)".contains("GenericError"))
            #expect("\(error)".contains("Failed to execute child process"))
        }

        let bad = ScriptedExec(status: ["exitcode": 0, "out-data": "not base64!"])
        let fake2 = try FakeAgent { bad.respond($0) }
        let agent2 = try await GuestAgent.adopt(fd: fake2.clientFD, timeout: .seconds(5))
        defer { agent2.close() }
        await #expect(throws: GuestError.self) { _ = try await agent2.run("true", timeout: .seconds(5)) }
    }

    @Test func closedChannelFailsPendingCalls() async throws {
        let fake = try FakeAgent { request in
            if request["execute"]?.stringValue == "guest-sync-delimited" { return FakeAgent.syncReply(request) }
            return nil
        }
        let agent = try await GuestAgent.adopt(fd: fake.clientFD, timeout: .seconds(5))
        defer { agent.close() }
        Task {
            try await Task.sleep(for: .milliseconds(200))
            shutdown(fake.agentFD, Int32(SHUT_RDWR))
        }
        do {
            _ = try await agent.run("true", timeout: .seconds(30))
            Issue.record("a call on a closed channel returned")
        } catch let error as GuestError {
            guard case .disconnected = error else {
                Issue.record("expected disconnected, got \(error)")
                return
            }
        }
    }
}

@Suite("Base64")
struct Base64Tests {
    @Test func roundTripsAndRejectsBadInput() {
        for length in 0..<40 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            #expect(Base64.decode(Base64.encode(bytes)) == bytes)
        }
        #expect(Base64.encode(Array("foobar".utf8)) == "Zm9vYmFy")
        #expect(Base64.encode(Array("fo".utf8)) == "Zm8=")
        #expect(Base64.decode("Zm9v\nYmE=") == Array("fooba".utf8))
        #expect(Base64.decode("Zm8") == Array("fo".utf8))  // padding optional
        #expect(Base64.decode("Zm9vY") == nil)  // 6 bits make no byte
        #expect(Base64.decode("Zm=8") == nil)  // padding in the middle
        #expect(Base64.decode("Zm9*") == nil)
        #expect(Base64.decode("") == [])
    }
}
