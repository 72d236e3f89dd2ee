import Foundation
import Platform
import QMP
import Synchronization
import Testing

/// A scripted QMP peer on a socketpair: for faults real QEMU will not
/// produce on demand (byte-wise writes, garbage, silence, huge integers,
/// a drop mid-message).
final class FakeQMPServer: @unchecked Sendable {
    let serverFD: Int32
    let clientFD: Int32
    private var buffered: [UInt8] = []

    static let greeting = #"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}"#

    init() throws {
        (serverFD, clientFD) = try UnixSocket.pair()
    }

    func write(_ text: String, bytewise: Bool = false) {
        let bytes = Array(text.utf8)
        if bytewise {
            for byte in bytes {
                var b = byte
                _ = Foundation.write(serverFD, &b, 1)
            }
        } else {
            bytes.withUnsafeBytes { _ = Foundation.write(serverFD, $0.baseAddress, $0.count) }
        }
    }

    /// Reads one line the client sent, parsed.
    func readMessage() -> JSONValue? {
        while true {
            if let newline = buffered.firstIndex(of: 0x0A) {
                let line = Array(buffered[..<newline])
                buffered.removeFirst(newline + 1)
                return try? JSONValue.parse(line)
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(serverFD, &chunk, 4096)
            if n <= 0 { return nil }
            buffered += chunk[0..<n]
        }
    }

    /// Greets and answers qmp_capabilities.
    func handshake(bytewise: Bool = false) {
        write(Self.greeting + "\r\n", bytewise: bytewise)
        let negotiate = readMessage()
        reply(to: negotiate, [:], bytewise: bytewise)
    }

    /// Sends `{"return": value, "id": <the command's id>}` as QEMU frames it.
    func reply(to command: JSONValue?, _ value: JSONValue, bytewise: Bool = false) {
        let message: JSONValue = ["return": value, "id": command?["id"] ?? .null]
        write(message.description + "\r\n", bytewise: bytewise)
    }

    func closeServer() { close(serverFD) }

    /// Runs the script on its own thread (it blocks on reads).
    func run(_ script: @escaping @Sendable (FakeQMPServer) -> Void) {
        Thread { script(self) }.start()
    }
}

@Suite("QMP client faults (fake server)")
struct QMPFaultTests {
    @Test func oneBytePerWrite() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        server.run { s in
            s.handshake(bytewise: true)
            let command = s.readMessage()
            s.write(#"{"timestamp": {"seconds": 5, "microseconds": 6}, "event": "STOP"}"# + "\r\n", bytewise: true)
            s.reply(to: command, ["status": "paused", "running": false], bytewise: true)
        }
        let client = try await QMPClient.adopt(fd: server.clientFD)
        defer { client.close() }
        let status = try await client.queryStatus()
        #expect(status.status == "paused")
        let event = try await client.waitForEvent("STOP", timeout: .seconds(5))
        #expect(event.timestamp == 5.000006)
    }

    @Test func garbageFailsEveryPendingCallAtOnceNamingWhatCame() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        let answered = Mutex(false)
        server.run { s in
            s.handshake()
            _ = s.readMessage()
            _ = s.readMessage()
            // A broken peer: an escape sequence and text that is not JSON. The
            // connection stays open; nothing answers the two commands.
            s.write("\u{1B}[2Jthis is not json\r\n")
            if s.readMessage() != nil { answered.withLock { $0 = true } }
        }
        let client = try await QMPClient.adopt(fd: server.clientFD)
        defer { client.close() }
        // Long timeouts: a failure that waits for them would be a timeout error, not this one.
        let first = Task { try await client.execute("query-status", timeout: .seconds(600)) }
        let second = Task { try await client.execute("query-block", timeout: .seconds(600)) }
        let event = Task { try await client.waitForEvent("SHUTDOWN", timeout: .seconds(600)) }
        // The wait may begin after the connection closed: it fails at once, saying why.
        let waited = await event.result
        guard case .failure(let waitError as QMPError) = waited, waitError.description.contains("malformed message") else {
            Issue.record("expected the event wait to fail with the malformed message, got \(waited)")
            return
        }
        for outcome in [await first.result.map { _ in () }, await second.result.map { _ in () }] {
            guard case .failure(let error as QMPError) = outcome, case .protocolViolation(let text) = error else {
                Issue.record("expected a protocol error, got \(outcome)")
                continue
            }
            #expect(text.contains("malformed message"))
            #expect(text.contains("invalid JSON"))
            // What was received, escaped: no raw ESC in the message.
            #expect(text.contains("\\x1b[2Jthis is not json"))
            #expect(!text.unicodeScalars.contains("\u{1B}"))
        }
        #expect(client.decodingErrors.count == 1)
        // The connection is closed: later calls fail at once, saying why.
        #expect(client.closedReason?.contains("malformed message") == true)
        await #expect(throws: QMPError.self) { _ = try await client.execute("query-status", timeout: .seconds(600)) }
        #expect(!answered.withLock { $0 })
    }

    @Test func invalidUTF8AndNULBytesBreakTheConnectionToo() async throws {
        let payloads: [(bytes: [UInt8], shown: String)] = [
            (Array(#"{"return": "caf"#.utf8) + [0xC3, 0x28] + Array(#"", "id": 0}"#.utf8), #"caf\xc3("#),
            (Array("123".utf8) + [0x00], #"123\x00"#),
            (Array(#"{"return": {}, "id": 0}"#.utf8) + [0x00], #"0}\x00"#),
        ]
        for payload in payloads {
            let server = try FakeQMPServer()
            defer { server.closeServer() }
            server.run { s in
                s.handshake()
                _ = s.readMessage()
                let line = payload.bytes + [0x0D, 0x0A]
                line.withUnsafeBytes { _ = Foundation.write(s.serverFD, $0.baseAddress, $0.count) }
            }
            let client = try await QMPClient.adopt(fd: server.clientFD)
            defer { client.close() }
            do {
                let reply = try await client.execute("query-status", timeout: .seconds(600))
                Issue.record("\(payload.shown): accepted as \(reply)")
            } catch let error as QMPError {
                guard case .protocolViolation(let text) = error else {
                    Issue.record("\(payload.shown): expected a protocol error, got \(error)")
                    continue
                }
                #expect(text.contains(payload.shown), "\(text)")
            }
        }
    }

    @Test func deadlineFiresWhileEventsKeepArriving() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        let stop = Mutex(false)
        let streamEnded = Mutex(false)
        server.run { s in
            s.handshake()
            _ = s.readMessage()  // and never answer it, but never go quiet either
            let giveUp = ContinuousClock.now + .seconds(60)
            // Batches without a pause: the socket is never empty when the reader polls.
            let batch = String(
                repeating: #"{"timestamp": {"seconds": 1, "microseconds": 0}, "event": "RTC_CHANGE", "data": {"offset": 0}}"# + "\r\n",
                count: 200)
            while !stop.withLock({ $0 }) && ContinuousClock.now < giveUp { s.write(batch) }
            streamEnded.withLock { $0 = true }
        }
        let client = try await QMPClient.adopt(fd: server.clientFD)
        defer { client.close() }
        defer {
            // The script stops writing before its descriptor closes.
            stop.withLock { $0 = true }
            while !streamEnded.withLock({ $0 }) { usleep(1_000) }
        }
        do {
            _ = try await client.execute("query-status", timeout: .milliseconds(300))
            Issue.record("expected a timeout")
        } catch let error as QMPError {
            #expect(error == .timeout(command: "query-status", seconds: 0.3))
        }
        // It fired while the stream was still flowing (not once it stopped after a minute).
        #expect(!streamEnded.withLock { $0 })
        let mark = client.eventMark()
        _ = try await client.waitForEvent("RTC_CHANGE", after: mark, timeout: .seconds(30))
        // An event wait's deadline fires under the stream too.
        await #expect(throws: QMPError.timeout(command: "waiting for event RESET", seconds: 0.2)) {
            _ = try await client.waitForEvent("RESET", timeout: .milliseconds(200))
        }
        #expect(!streamEnded.withLock { $0 })
    }

    @Test func replyThatNeverComesTimesOut() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        server.run { s in
            s.handshake()
            _ = s.readMessage()  // and never answer
        }
        let client = try await QMPClient.adopt(fd: server.clientFD)
        defer { client.close() }
        do {
            _ = try await client.execute("query-status", timeout: .milliseconds(300))
            Issue.record("expected a timeout")
        } catch let error as QMPError {
            #expect(error == .timeout(command: "query-status", seconds: 0.3))
        }
        // An event wait times out the same way.
        await #expect(throws: QMPError.timeout(command: "waiting for event RESET", seconds: 0.2)) {
            _ = try await client.waitForEvent("RESET", timeout: .milliseconds(200))
        }
    }

    @Test func oversizedIntegerIsDeliveredExactly() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        server.run { s in
            s.handshake()
            let command = s.readMessage()
            // Serialised through jansson with the integer kept exactly: 18446744073709551615.
            s.reply(to: command, ["size": .uint(UInt64.max), "small": 1])
        }
        let client = try await QMPClient.adopt(fd: server.clientFD)
        defer { client.close() }
        let reply = try await client.execute("query-block")
        #expect(reply["size"]?.uint64Value == UInt64.max)
        #expect(reply["small"] == .int(1))
    }

    @Test func dropMidMessageFailsPendingCalls() async throws {
        let server = try FakeQMPServer()
        server.run { s in
            s.handshake()
            _ = s.readMessage()
            s.write(#"{"return": {"stat"#)
            s.closeServer()
        }
        let client = try await QMPClient.adopt(fd: server.clientFD)
        defer { client.close() }
        let first = Task { try await client.execute("query-status", timeout: .seconds(30)) }
        let second = Task { try await client.waitForEvent("SHUTDOWN", timeout: .seconds(30)) }
        let outcomes = [await first.result.map { _ in () }, await second.result.map { _ in () }]
        for outcome in outcomes {
            guard case .failure(let error as QMPError) = outcome, case .disconnected(let reason) = error else {
                Issue.record("expected .disconnected, got \(outcome)")
                continue
            }
            #expect(reason.contains("middle of a message"))
        }
    }

    @Test func sequentialCommandsReuseOneShortID() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        let ids = IDLog()
        server.run { s in
            s.handshake()
            for index in 0..<3 {
                let command = s.readMessage()
                ids.record(command?["id"])
                s.reply(to: command, JSONValue(index))
            }
        }
        let client = try await QMPClient.adopt(fd: server.clientFD)
        defer { client.close() }
        for index in 0..<3 {
            #expect(try await client.execute("query-\(index)") == JSONValue(index))
        }
        // Answered ids are free again: every command of a sequential caller
        // carries the same one-digit id (QEMU reads QMP a byte at a time).
        let seen = ids.all
        #expect(seen.count == 3)
        #expect(Set(seen.map { $0?.description }).count == 1)
        #expect(seen.allSatisfy { ($0?.uint64Value ?? 10) < 10 })
    }

    @Test func noGreetingTimesOut() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        do {
            _ = try await QMPClient.adopt(fd: server.clientFD, timeout: .milliseconds(200))
            Issue.record("adopt succeeded without a greeting")
        } catch let error as QMPError {
            // The greeting wait's own timeout, not a disconnection or another failure.
            guard case .protocolViolation(let text) = error else {
                Issue.record("expected the missing-greeting timeout, got \(error)")
                return
            }
            #expect(text.hasPrefix("no QMP greeting from QEMU in time"), "\(text)")
        }
    }
}

