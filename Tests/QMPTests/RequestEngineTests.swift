import Foundation
import QMP
import Synchronization
import Testing

/// The request/reply engine on its own, with the plainest client possible:
/// a request is `{"execute": name, "id": n}`, a reply `{"return": x, "id": n}`.
/// What is shown here holds for every client built on it (QMPClient and
/// GuestAgent show it again through their own framing in LabCoreTests'
/// EngineClientsTests).
@Suite("Request/reply engine")
struct RequestEngineTests {
    struct EngineError: Error, Equatable {
        var command: String
        var what: String
    }

    typealias Engine = RequestEngine<String, JSONValue, Void>

    /// An engine on one end of a socketpair whose other end is `server`, routing replies by id.
    static func makeEngine(_ server: FakeQMPServer) throws -> Engine {
        let engine = try Engine(
            adopting: server.clientFD, extra: (),
            policy: .init(failure: { command, failure in
                switch failure {
                case .timedOut: EngineError(command: command, what: "timeout")
                case .closed: EngineError(command: command, what: "closed")
                case .malformed: EngineError(command: command, what: "malformed")
                case .alreadyClosed: EngineError(command: command, what: "already closed")
                case .sendFailed: EngineError(command: command, what: "send failed")
                case .cancelled: EngineError(command: command, what: "cancelled")
                }
            }))
        try engine.start(onMessage: { [weak engine] message in
            guard let id = message["id"]?.uint64Value, let value = message["return"] else {
                engine?.update { $0.noteUnmatchedReply() }
                return
            }
            _ = engine?.update { $0.answer(id: id) { _ in .success(value) } }
        })
        return engine
    }

    static func call(_ engine: Engine, _ command: String, timeout: Duration = .seconds(600)) async throws -> JSONValue {
        try await engine.request(command, timeout: timeout) { id in
            Array(#"{"execute": "\#(command)", "id": \#(id)}"#.utf8) + [0x0A]
        }
    }

    /// What a call ended with: its value or the failure the engine reported.
    static func outcome(_ task: Task<JSONValue, any Error>) async -> String {
        switch await task.result {
        case .success(let value): return "value \(value)"
        case .failure(let error as EngineError): return "\(error.command): \(error.what)"
        case .failure(let error): return "unexpected \(error)"
        }
    }

    /// Requests the peer has read, in order.
    final class Requests: Sendable {
        let all = Mutex<[JSONValue]>([])
        func append(_ request: JSONValue?) { if let request { all.withLock { $0.append(request) } } }
        var count: Int { all.withLock { $0.count } }
        func id(_ index: Int) -> JSONValue? { all.withLock { $0[index]["id"] } }
        func waitFor(_ count: Int) async throws {
            while self.count < count { try await Task.sleep(for: .milliseconds(2)) }
        }
    }

    @Test func closeFailsEveryPendingRequestAndEveryLaterOne() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        let requests = Requests()
        server.run { s in
            requests.append(s.readMessage())
            requests.append(s.readMessage())
            shutdown(s.serverFD, Int32(SHUT_RDWR))
        }
        let engine = try Self.makeEngine(server)
        let first = Task { try await Self.call(engine, "first") }
        let second = Task { try await Self.call(engine, "second") }
        #expect(await Self.outcome(first) == "first: closed")
        #expect(await Self.outcome(second) == "second: closed")
        #expect(engine.closedReason == "QEMU closed the connection")
        #expect(await Self.outcome(Task { try await Self.call(engine, "later") }) == "later: already closed")
        engine.close()
    }

    @Test func aMalformedMessageFailsEveryPendingRequestAtOnce() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        let requests = Requests()
        server.run { s in
            requests.append(s.readMessage())
            requests.append(s.readMessage())
            s.write("not json\r\n")  // and the connection stays open
        }
        let engine = try Self.makeEngine(server)
        defer { engine.close() }
        let first = Task { try await Self.call(engine, "first") }
        let second = Task { try await Self.call(engine, "second") }
        #expect(await Self.outcome(first) == "first: malformed")
        #expect(await Self.outcome(second) == "second: malformed")
        #expect(engine.decodingErrors.count == 1)
        #expect(engine.closedReason?.contains("malformed message") == true)
    }

    @Test func deadlinesFireUnderASteadyStreamOfUnsolicitedLines() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        let stop = Mutex(false)
        let streamEnded = Mutex(false)
        server.run { s in
            _ = s.readMessage()  // never answered
            let batch = String(repeating: #"{"return": {}, "id": 999999}"# + "\r\n", count: 200)
            let giveUp = ContinuousClock.now + .seconds(60)
            while !stop.withLock({ $0 }) && ContinuousClock.now < giveUp { s.write(batch) }
            streamEnded.withLock { $0 = true }
        }
        let engine = try Self.makeEngine(server)
        defer { engine.close() }
        defer {
            stop.withLock { $0 = true }
            while !streamEnded.withLock({ $0 }) { usleep(1_000) }
        }
        #expect(await Self.outcome(Task { try await Self.call(engine, "never", timeout: .milliseconds(300)) }) == "never: timeout")
        #expect(!streamEnded.withLock { $0 })
        #expect(engine.update { $0.unmatchedReplies } > 0)
    }

    @Test func cancellingOneRequestLeavesTheOthersAndItsLateReplyGoesNowhere() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        let requests = Requests()
        let cancelled = Mutex(false)
        server.run { s in
            let a = s.readMessage()
            requests.append(a)
            let b = s.readMessage()
            requests.append(b)
            while !cancelled.withLock({ $0 }) { usleep(1_000) }
            s.reply(to: b, "b")
            let c = s.readMessage()
            requests.append(c)
            s.reply(to: a, "late a")  // after `a` was cancelled, while `c` is pending
            s.reply(to: c, "c")
        }
        let engine = try Self.makeEngine(server)
        defer { engine.close() }
        let a = Task { try await Self.call(engine, "a") }
        try await requests.waitFor(1)
        let b = Task { try await Self.call(engine, "b") }
        try await requests.waitFor(2)
        a.cancel()
        #expect(await Self.outcome(a) == "a: cancelled")
        cancelled.withLock { $0 = true }
        #expect(await Self.outcome(b) == #"value "b""#)
        #expect(await Self.outcome(Task { try await Self.call(engine, "c") }) == #"value "c""#)
        // The cancelled request's id stayed retired until its late reply came: c, sent before it, has another.
        #expect(requests.id(2) != requests.id(0))
    }

    @Test func idsAreSmallAndReusedOnlyOnceAnswered() async throws {
        let server = try FakeQMPServer()
        defer { server.closeServer() }
        let requests = Requests()
        server.run { s in
            for _ in 0..<3 {
                let request = s.readMessage()
                requests.append(request)
                s.reply(to: request, "ok")
            }
            // Two at once: both pending, so two ids.
            let x = s.readMessage()
            let y = s.readMessage()
            requests.append(x)
            requests.append(y)
            s.reply(to: y, "y")
            s.reply(to: x, "x")
        }
        let engine = try Self.makeEngine(server)
        defer { engine.close() }
        for _ in 0..<3 { #expect(try await Self.call(engine, "seq") == "ok") }
        async let x = Self.call(engine, "x")
        async let y = Self.call(engine, "y")
        let both = try await [x, y].sorted { $0.description < $1.description }
        #expect(both == ["x", "y"])
        let ids = requests.all.withLock { $0.map { $0["id"]?.uint64Value } }
        #expect(ids[0..<3].allSatisfy { $0 == 0 })
        #expect(Set(ids[3...]) == [0, 1])
    }
}
