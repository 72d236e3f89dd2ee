import Foundation
import LabCore
import Platform
import QMP
import Synchronization
import Testing

/// The request/reply engine's behaviour (RequestEngineTests in QMPTests)
/// shown again through both clients built on it, each against a fake peer
/// speaking its framing: QMP (greeting, qmp_capabilities, events) and the
/// guest agent (0xFF-delimited sync, stale replies).
@Suite("Engine behaviour through QMPClient and GuestAgent")
struct EngineClientsTests {
    enum Framing: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case qmp, agent
        var testDescription: String { rawValue }

        /// A line the peer may send at any time that answers nothing.
        var unsolicitedLine: String {
            switch self {
            case .qmp: #"{"timestamp": {"seconds": 1, "microseconds": 0}, "event": "RTC_CHANGE", "data": {"offset": 0}}"#
            case .agent: #"{"return": {}, "id": 999999}"#
            }
        }
    }

    /// What a call ended with, named the same way for both clients.
    enum Outcome: Equatable, CustomStringConvertible {
        case value(JSONValue)
        case timeout, disconnected, malformed, cancelled
        case other(String)

        init(_ result: Result<JSONValue, any Error>) {
            switch result {
            case .success(let value): self = .value(value)
            case .failure(let error as QMPError):
                switch error {
                case .timeout: self = .timeout
                case .disconnected: self = .disconnected
                case .protocolViolation(let text) where text.contains("malformed message"): self = .malformed
                case .cancelled: self = .cancelled
                default: self = .other("\(error)")
                }
            case .failure(let error as GuestError):
                switch error {
                case .timeout: self = .timeout
                case .disconnected: self = .disconnected
                case .agent(let text) where text.contains("malformed message"): self = .malformed
                case .cancelled: self = .cancelled
                default: self = .other("\(error)")
                }
            case .failure(let error): self = .other("\(error)")
            }
        }

        var description: String {
            switch self {
            case .value(let value): "value \(value)"
            case .timeout: "timeout"
            case .disconnected: "disconnected"
            case .malformed: "malformed"
            case .cancelled: "cancelled"
            case .other(let text): "other: \(text)"
            }
        }
    }

    /// A peer on one end of a socketpair: answers the handshake of its
    /// framing by itself, records every later request and writes what the
    /// test tells it to.
    final class Peer: Sendable {
        let peerFD: Int32
        let clientFD: Int32
        let framing: Framing
        private let requests = Mutex<[JSONValue]>([])

        init(_ framing: Framing) throws {
            (peerFD, clientFD) = try UnixSocket.pair()
            self.framing = framing
            if framing == .qmp {
                send(#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": []}}"#)
            }
            let peer = self
            Thread { peer.serve() }.start()
        }

        func send(_ line: String) { send(Array((line + "\r\n").utf8)) }

        func send(_ bytes: [UInt8]) {
            _ = bytes.withUnsafeBytes { write(peerFD, $0.baseAddress, $0.count) }
        }

        /// `{"return": value, "id": <the request's id>}`.
        func reply(to request: JSONValue, _ value: JSONValue) {
            let object: JSONValue = ["return": value, "id": request["id"] ?? .null]
            send(object.description)
        }

        /// Requests other than the handshake, in order.
        var received: [JSONValue] { requests.withLock { $0 } }

        func waitForRequests(_ count: Int) async throws {
            while received.count < count { try await Task.sleep(for: .milliseconds(2)) }
        }

        func hangUp() { shutdown(peerFD, Int32(SHUT_RDWR)) }

        private func serve() {
            var line: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(peerFD, &buffer, buffer.count)
                if n <= 0 { break }
                for byte in buffer[0..<n] where byte != 0xFF {
                    guard byte == 0x0A else {
                        line.append(byte)
                        continue
                    }
                    defer { line = [] }
                    guard let request = try? JSONValue.parse(line) else { continue }
                    switch request["execute"]?.stringValue {
                    case "qmp_capabilities": reply(to: request, [:])
                    case "guest-sync-delimited":
                        send([0xFF])
                        reply(to: request, request["arguments"]?["id"] ?? .null)
                    default: requests.withLock { $0.append(request) }
                    }
                }
            }
        }

        deinit { close(peerFD) }
    }

    /// A connected client of `framing` on `peer`: calls and close.
    struct Client: Sendable {
        let call: @Sendable (_ command: String, _ timeout: Duration) async throws -> JSONValue
        let close: @Sendable () -> Void

        static func connect(_ peer: Peer) async throws -> Client {
            switch peer.framing {
            case .qmp:
                let client = try await QMPClient.adopt(fd: peer.clientFD)
                return Client(call: { try await client.execute($0, timeout: $1) }, close: { client.close() })
            case .agent:
                let agent = try await GuestAgent.adopt(fd: peer.clientFD, timeout: .seconds(10))
                return Client(call: { try await agent.execute($0, timeout: $1) }, close: { agent.close() })
            }
        }

        func outcome(_ command: String, timeout: Duration = .seconds(600)) async -> Outcome {
            do {
                return Outcome(.success(try await call(command, timeout)))
            } catch {
                return Outcome(.failure(error))
            }
        }

        func start(_ command: String, timeout: Duration = .seconds(600)) -> Task<Outcome, Never> {
            Task { await outcome(command, timeout: timeout) }
        }
    }

    @Test(arguments: Framing.allCases) func closeFailsEveryPendingCallAtOnce(framing: Framing) async throws {
        let peer = try Peer(framing)
        let client = try await Client.connect(peer)
        defer { client.close() }
        // Long timeouts: a failure that waited for them would be a timeout.
        let first = client.start("query-first")
        let second = client.start("query-second")
        try await peer.waitForRequests(2)
        peer.hangUp()
        #expect(await first.value == .disconnected)
        #expect(await second.value == .disconnected)
        #expect(await client.outcome("query-later") == .disconnected)
    }

    @Test(arguments: Framing.allCases) func aMalformedMessageFailsEveryPendingCallAtOnce(framing: Framing) async throws {
        let peer = try Peer(framing)
        let client = try await Client.connect(peer)
        defer { client.close() }
        let first = client.start("query-first")
        let second = client.start("query-second")
        try await peer.waitForRequests(2)
        peer.send("\u{1B}[2Jthis is not json")  // the connection stays open
        #expect(await first.value == .malformed)
        #expect(await second.value == .malformed)
        // Closed: the next call fails at once, however long its timeout.
        #expect(await client.outcome("query-later") == .disconnected)
    }

    @Test(arguments: Framing.allCases) func deadlineFiresUnderASteadyStreamOfUnsolicitedLines(framing: Framing) async throws {
        let peer = try Peer(framing)
        let client = try await Client.connect(peer)
        defer { client.close() }
        let stop = Mutex(false)
        let streamEnded = Mutex(false)
        defer {
            // The writer ends before the peer's descriptor closes.
            stop.withLock { $0 = true }
            while !streamEnded.withLock({ $0 }) { usleep(1_000) }
        }
        let batch = Array(String(repeating: framing.unsolicitedLine + "\r\n", count: 200).utf8)
        Thread {
            let giveUp = ContinuousClock.now + .seconds(60)
            // Batches without a pause: the socket is never empty when the reader polls.
            while !stop.withLock({ $0 }) && ContinuousClock.now < giveUp { peer.send(batch) }
            streamEnded.withLock { $0 = true }
        }.start()
        #expect(await client.outcome("query-never-answered", timeout: .milliseconds(300)) == .timeout)
        #expect(!streamEnded.withLock { $0 })
    }

    @Test(arguments: Framing.allCases) func cancellingOneCallLeavesTheOthersWorking(framing: Framing) async throws {
        let peer = try Peer(framing)
        let client = try await Client.connect(peer)
        defer { client.close() }
        let cancelled = client.start("query-cancelled")
        try await peer.waitForRequests(1)
        let kept = client.start("query-kept")
        try await peer.waitForRequests(2)
        cancelled.cancel()
        #expect(await cancelled.value == .cancelled)
        let requests = peer.received
        peer.reply(to: requests[1], "kept")
        #expect(await kept.value == .value("kept"))
        // The cancelled call's late reply comes while a later call is pending: it must not reach it.
        let next = client.start("query-next")
        try await peer.waitForRequests(3)
        peer.reply(to: requests[0], "late")
        peer.reply(to: peer.received[2], "next")
        #expect(await next.value == .value("next"))
    }
}
