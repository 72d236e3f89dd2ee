import CJansson
import Logging
import Platform
import Synchronization

/// A QMP connection: commands with replies routed by `id`, events as a
/// stream and as waits that cannot miss an earlier event.
///
/// Thread-safe (`Sendable`): many tasks may call ``execute(_:arguments:timeout:outOfBand:)``
/// at once. Every wait has a timeout. When the socket drops or QEMU exits,
/// every pending call fails at once with ``QMPError/disconnected(_:)``.
/// When QEMU sends a message that does not decode (not JSON, invalid
/// UTF-8, a NUL byte), the peer is broken: every pending call fails at once
/// with ``QMPError/protocolViolation(_:)`` naming what was received, and
/// the connection closes. Timeouts fire whatever QEMU sends meanwhile.
/// All of that is the ``RequestEngine``'s (the guest agent's client is
/// built on it too); this class adds QMP's greeting, replies and events.
///
/// Command ids are small integers, unique among the commands QEMU may still
/// answer: an id is reused only once its reply has arrived; the id of a
/// command that timed out or was cancelled stays retired until its late
/// reply comes, so a late reply never reaches another command. Short ids
/// matter: QEMU 7.2 reads QMP input one byte per main-loop turn, about
/// 3.5 us a byte here, so `"id":"q12345"` would cost 25 us per round trip
/// more than `"id":0`.
public final class QMPClient: Sendable {
    /// How many events are kept for ``waitForEvent(_:matching:after:timeout:)``.
    public let eventHistoryLimit: Int
    public let timeouts: QMPTimeouts
    /// Sees every message in and out (``QMPTracer``); nil: no trace.
    public let tracer: (any QMPTracer)?

    /// Ids, deadlines, fail-all and cancellation; this class adds QMP's greeting, replies and events.
    private let engine: RequestEngine<Waiting, Delivery, Events>

    /// The reader re-checks deadlines at least this often, so a new call
    /// with a longer timeout need not wake it.
    static let maximumPollInterval: Duration = .milliseconds(250)

    /// What a pending call waits for.
    enum Waiting: Sendable {
        case reply(command: String)
        case event(name: String, pattern: JSONValue?, after: UInt64)
        case greeting
    }

    /// What ends a pending call.
    enum Delivery: Sendable {
        case reply(JSONValue)
        case event(QMPEvent)
        case greeting(QMPGreeting)
    }

    struct HistoryEntry {
        var event: QMPEvent
        var consumed = false
    }

    /// QMP's state next to the pending table, under the engine's lock.
    struct Events: Sendable {
        var greeting: QMPGreeting?
        var history: [HistoryEntry] = []
        var historyStart = 0
        var lastEventSequence: UInt64 = 0
        var nextSubscriberKey: UInt64 = 0
        var subscribers: [UInt64: AsyncStream<QMPEvent>.Continuation] = [:]
    }

    private init(fd: Int32, eventHistoryLimit: Int, timeouts: QMPTimeouts, tracer: (any QMPTracer)?) throws(SystemCallError) {
        self.eventHistoryLimit = eventHistoryLimit
        self.timeouts = timeouts
        self.tracer = tracer
        self.engine = try RequestEngine(
            adopting: fd, extra: Events(),
            policy: .init(
                failure: Self.failure,
                closedReason: { reason, malformed in malformed.map { "QEMU sent a malformed message: \($0)" } ?? reason },
                maximumPollInterval: Self.maximumPollInterval))
    }

    /// What a caller waiting for `waiting` sees when it fails.
    static func failure(_ waiting: Waiting, _ failure: RequestFailure) -> any Error {
        let during: String
        switch waiting {
        case .reply(let command): during = "while \(command) was pending"
        case .event(let name, _, _): during = "while waiting for event \(name)"
        case .greeting: during = "before the QMP greeting"
        }
        switch failure {
        case .timedOut(let timeout):
            switch waiting {
            case .reply(let command): return QMPError.timeout(command: command, seconds: timeout.inSeconds)
            case .event(let name, _, _): return QMPError.timeout(command: "waiting for event \(name)", seconds: timeout.inSeconds)
            case .greeting:
                return QMPError.protocolViolation(
                    "no QMP greeting from QEMU in time; QEMU serves one client per monitor socket, so another client (e.g. a running `qlab run`) may hold it")
            }
        case .closed(let reason): return QMPError.disconnected("\(reason) \(during)")
        case .malformed(let error): return QMPError.protocolViolation("QEMU sent a malformed message \(during): \(error)")
        case .alreadyClosed(let reason): return QMPError.disconnected(reason)
        case .sendFailed(let error): return error
        case .cancelled: return QMPError.cancelled
        }
    }

    // MARK: Connecting

    /// Connects to QEMU's QMP socket at `path`, reads the greeting and,
    /// unless `negotiate` is false, leaves capabilities negotiation mode.
    /// `tracer` and the process's tracer (``QMPTracing``) see every message.
    public static func connect(
        path: String, negotiate: Bool = true, enableOOB: Bool = false, timeout: Duration = .seconds(5),
        eventHistoryLimit: Int = 1024, timeouts: QMPTimeouts = QMPTimeouts(), tracer: (any QMPTracer)? = nil
    ) async throws -> QMPClient {
        let fd: Int32
        do {
            fd = try UnixSocket.connect(path: path)
        } catch {
            throw QMPError.connect(error.description)
        }
        return try await adopt(
            fd: fd, negotiate: negotiate, enableOOB: enableOOB, timeout: timeout,
            eventHistoryLimit: eventHistoryLimit, timeouts: timeouts, tracer: tracer)
    }

    /// Adopts an already-connected socket (e.g. one end of a socketpair whose
    /// other end QEMU got with `-chardev socket,fd=N`). The client closes it.
    public static func adopt(
        fd: Int32, negotiate: Bool = true, enableOOB: Bool = false, timeout: Duration = .seconds(5),
        eventHistoryLimit: Int = 1024, timeouts: QMPTimeouts = QMPTimeouts(), tracer: (any QMPTracer)? = nil
    ) async throws -> QMPClient {
        let client: QMPClient
        do {
            client = try QMPClient(
                fd: fd, eventHistoryLimit: eventHistoryLimit, timeouts: timeouts,
                tracer: QMPTracers.combine([tracer, QMPTracing.processTracer]))
        } catch {
            FileDescriptor(rawValue: fd).closeIgnoringErrors()
            throw QMPError.connect(error.description)
        }
        do {
            try client.engine.start(
                onMessage: { [weak client] message in client?.handle(message) },
                onClosed: { [weak client] in client?.finishSubscribers() })
        } catch {
            throw QMPError.connect(error.description)
        }
        do {
            let greeting = try await client.greeting(timeout: timeout)
            if negotiate { try await client.negotiate(enableOOB: enableOOB) }
            QMPLog.logger.debug("QMP connected", metadata: ["qemu": "\(greeting.version)", "capabilities": "\(greeting.capabilities)"])
        } catch {
            client.close()
            throw error
        }
        return client
    }

    /// Waits for QEMU's greeting (it is the first thing QEMU sends).
    public func greeting(timeout: Duration = .seconds(5)) async throws -> QMPGreeting {
        let delivery = try await engine.wait(.greeting, timeout: timeout) { table in
            table.extra.greeting.map { .success(.greeting($0)) }
        }
        guard case .greeting(let greeting) = delivery else { preconditionFailure("a greeting wait ended with \(delivery)") }
        return greeting
    }

    /// `qmp_capabilities`, enabling out-of-band execution when asked for and offered.
    public func negotiate(enableOOB: Bool = false) async throws {
        let offered = engine.update { $0.extra.greeting?.capabilities ?? [] }
        var arguments: JSONObject?
        if enableOOB && offered.contains("oob") {
            arguments = ["enable": ["oob"]]
        }
        _ = try await execute("qmp_capabilities", arguments: arguments)
    }

    // MARK: Running on the reader thread

    /// The reader thread's task executor. A task that prefers it runs its
    /// nonisolated code on the thread that reads QEMU's replies, so a reply
    /// resumes it without waking another thread: sequential callers (a CLI
    /// command, a revert loop) pay one thread switch per round trip instead
    /// of two. See ``withPreferredExecutor(isolation:_:)``.
    public var executor: ReaderThreadExecutor { engine.channel.executor }

    /// Runs `operation` preferring ``executor``: `withTaskExecutorPreference`
    /// with this client's reader thread.
    ///
    /// Nonisolated code in `operation` (and the client's own methods) then
    /// runs on the reader thread; code isolated to an actor still runs on
    /// that actor, so call this from nonisolated code to gain the most.
    /// Everything works as without it, including timeouts, events and a
    /// dropped connection; once the connection has closed, the work goes
    /// on on the global executor. Inside, only await: blocking the thread
    /// (a semaphore, blocking I/O) also stops replies from being read.
    public func withPreferredExecutor<T, Failure: Error>(
        isolation: isolated (any Actor)? = #isolation,
        _ operation: () async throws(Failure) -> T
    ) async throws(Failure) -> T {
        try await withTaskExecutorPreference(engine.channel.executor, isolation: isolation, operation: operation)
    }

    /// Closes the connection; pending calls fail with `.disconnected`.
    public func close() {
        if engine.closedReason == nil { QMPLog.logger.debug("QMP connection closed") }
        engine.close()
    }

    /// Why the connection ended, or nil while it is open.
    public var closedReason: String? { engine.closedReason }

    /// Lines that did not decode (garbage, bad UTF-8, ...), most recent
    /// last; the first one closes the connection.
    public var decodingErrors: [QMPDecodingError] { engine.decodingErrors }

    // MARK: Commands

    /// Executes `command` and returns its `return` value.
    ///
    /// - Parameters:
    ///   - timeout: overrides ``QMPTimeouts`` for this call.
    ///   - outOfBand: sends `exec-oob` (needs OOB negotiated).
    /// - Throws: ``QMPError``: `.command` with QEMU's class and desc,
    ///   `.timeout`, `.disconnected`, `.cancelled`.
    public func execute(
        _ command: String, arguments: JSONObject? = nil, timeout: Duration? = nil, outOfBand: Bool = false
    ) async throws -> JSONValue {
        let limit = timeout ?? timeouts.timeout(for: command, arguments: arguments)
        let tracer = self.tracer
        let delivery = try await engine.request(.reply(command: command), timeout: limit) { id in
            if let tracer {
                var message: JSONObject = [outOfBand ? "exec-oob" : "execute": .string(command)]
                if let arguments { message["arguments"] = .object(arguments) }
                message["id"] = JSONValue(id)
                tracer.record(.sent, .object(message))
            }
            do throws(JSONEncodeError) {
                return try Self.encodeCommand(command, arguments: arguments, id: id, outOfBand: outOfBand)
            } catch {
                throw QMPError.encoding(error.description)
            }
        }
        guard case .reply(let value) = delivery else { preconditionFailure("a command ended with \(delivery)") }
        return value
    }

    /// `{"execute": command, "arguments": ..., "id": id}` and a line end,
    /// serialised by jansson from a tree built directly (no ``JSONObject`` in
    /// between), with one `json_dumpb` pass for the usual small command.
    static func encodeCommand(
        _ command: String, arguments: JSONObject?, id: UInt64, outOfBand: Bool
    ) throws(JSONEncodeError) -> [UInt8] {
        var bigIntegers: [UInt64] = []
        let root = json_object()!
        defer { qlab_json_decref(root) }
        _ = json_object_set_new_nocheck(root, outOfBand ? "exec-oob" : "execute", try JSONValue.string(command).makeJansson(bigIntegers: &bigIntegers))
        if let arguments {
            _ = json_object_set_new_nocheck(root, "arguments", try JSONValue.object(arguments).makeJansson(bigIntegers: &bigIntegers))
        }
        _ = json_object_set_new_nocheck(root, "id", json_integer(json_int_t(id)))
        let flags = JanssonFlags.compact
        let bytes: [UInt8] = try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 512) { stack throws(JSONEncodeError) in
            let size = json_dumpb(root, UnsafeMutableRawPointer(stack.baseAddress!).assumingMemoryBound(to: CChar.self), stack.count, flags)
            guard size > 0 else { throw JSONEncodeError(description: "json_dumpb failed") }
            if size <= stack.count {
                var bytes = [UInt8]()
                bytes.reserveCapacity(size + 1)
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: stack[..<size]))
                return bytes
            }
            var bytes = [UInt8](repeating: 0, count: size)
            _ = bytes.withUnsafeMutableBytes { json_dumpb(root, $0.baseAddress!.assumingMemoryBound(to: CChar.self), size, flags) }
            return bytes
        }
        var line = bigIntegers.isEmpty ? bytes : BigIntegerRescue.substituteTokens(in: bytes, with: bigIntegers)
        line.append(0x0A)
        return line
    }

    // MARK: Events

    /// A mark at the current end of the event stream.
    public func eventMark() -> QMPEventMark {
        QMPEventMark(sequence: engine.update { $0.extra.lastEventSequence })
    }

    /// The retained events, oldest first.
    public var eventHistory: [QMPEvent] {
        engine.update { t in t.extra.history[t.extra.historyStart...].map(\.event) }
    }

    /// Waits for an event named `name` whose data contains `pattern`
    /// (``JSONValue/contains(_:)``).
    ///
    /// Looks first through the retained history, so an event that arrived
    /// before the call (e.g. while the command that causes it was answered)
    /// is found: with `after`, only events after that mark; without it, any
    /// not yet returned by an earlier wait. The event returned is marked as
    /// consumed and no other wait returns it.
    public func waitForEvent(
        _ name: String, matching pattern: JSONValue? = nil, after mark: QMPEventMark? = nil,
        timeout: Duration = .seconds(30)
    ) async throws -> QMPEvent {
        let after = mark?.sequence ?? 0
        let delivery = try await engine.wait(.event(name: name, pattern: pattern, after: after), timeout: timeout) { table in
            for index in table.extra.history.indices.dropFirst(table.extra.historyStart) {
                let entry = table.extra.history[index]
                if !entry.consumed && entry.event.sequence > after && Self.matches(entry.event, name, pattern) {
                    table.extra.history[index].consumed = true
                    return .success(.event(entry.event))
                }
            }
            return nil
        }
        guard case .event(let event) = delivery else { preconditionFailure("an event wait ended with \(delivery)") }
        return event
    }

    /// Every event from now on, in order, unbounded (none is dropped). The
    /// stream finishes when the connection closes.
    public func events() -> AsyncStream<QMPEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: QMPEvent.self, bufferingPolicy: .unbounded)
        let key: UInt64? = engine.update { t in
            if t.closedReason != nil { return nil }
            t.extra.nextSubscriberKey += 1
            t.extra.subscribers[t.extra.nextSubscriberKey] = continuation
            return t.extra.nextSubscriberKey
        }
        guard let key else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.engine.update { $0.extra.subscribers.removeValue(forKey: key) }
        }
        return stream
    }

    static func matches(_ event: QMPEvent, _ name: String, _ pattern: JSONValue?) -> Bool {
        event.name == name && (pattern.map { event.data.contains($0) } ?? true)
    }

    // MARK: Reader side

    private func handle(_ message: JSONObject) {
        tracer?.record(.received, .object(message))
        if let id = message["id"], message["return"] != nil || message["error"] != nil {
            deliverReply(message, id: id)
        } else if message["event"] != nil {
            deliverEvent(message)
        } else if message["QMP"] != nil {
            deliverGreeting(message)
        } else {
            // E.g. an error without id: QEMU could not parse a command at all.
            engine.update { $0.noteUnmatchedReply() }
        }
    }

    private func deliverReply(_ message: JSONObject, id: JSONValue) {
        engine.update { table in
            guard let key = id.uint64Value else { return table.noteUnmatchedReply() }
            table.answer(id: key) { waiting in
                if let value = message["return"] { return .success(.reply(value)) }
                guard case .reply(let command) = waiting else { return nil }
                let error = message["error"]
                return .failure(QMPError.command(
                    name: command,
                    errorClass: error?["class"]?.stringValue ?? "GenericError",
                    description: error?["desc"]?.stringValue ?? "(no description)"))
            }
        }
    }

    private func deliverGreeting(_ message: JSONObject) {
        guard let greeting = QMPGreeting(message) else { return }
        engine.update { table in
            table.extra.greeting = greeting
            table.deliverToWaits(where: { if case .greeting = $0 { true } else { false } }, .greeting(greeting))
        }
    }

    private func deliverEvent(_ message: JSONObject) {
        let limit = eventHistoryLimit
        let (event, subscribers): (QMPEvent?, [AsyncStream<QMPEvent>.Continuation]) = engine.update { table in
            guard let event = QMPEvent(message, sequence: table.extra.lastEventSequence + 1) else { return (nil, []) }
            table.extra.lastEventSequence += 1
            // The oldest matching waiter gets it.
            let consumed = table.deliverToOldestWait(where: { waiting in
                guard case .event(let name, let pattern, let after) = waiting else { return false }
                return after < event.sequence && Self.matches(event, name, pattern)
            }, .event(event))
            table.extra.history.append(HistoryEntry(event: event, consumed: consumed))
            if table.extra.history.count - table.extra.historyStart > limit { table.extra.historyStart += 1 }
            if table.extra.historyStart > limit {
                table.extra.history.removeFirst(table.extra.historyStart)
                table.extra.historyStart = 0
            }
            return (event, Array(table.extra.subscribers.values))
        }
        guard let event else { return }
        for subscriber in subscribers { subscriber.yield(event) }
    }

    /// The connection ended: event streams finish (outside the lock: finishing runs their `onTermination`).
    private func finishSubscribers() {
        let subscribers = engine.update { table in
            defer { table.extra.subscribers = [:] }
            return Array(table.extra.subscribers.values)
        }
        for subscriber in subscribers { subscriber.finish() }
    }
}
