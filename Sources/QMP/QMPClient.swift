import CJansson
#if canImport(Glibc)
import Glibc
#endif
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

    private let state: Mutex<State>
    // Set once in init, before the reader starts; read-only afterwards.
    nonisolated(unsafe) private var channel: MessageChannel!

    /// The reader re-checks deadlines at least this often, so a new call
    /// with a longer timeout need not wake it.
    static let maximumPollInterval: Duration = .milliseconds(250)

    struct PendingCommand {
        var continuation: UnsafeContinuation<JSONValue, Error>
        var command: String
        var deadline: ContinuousClock.Instant
        var timeout: Duration
    }

    struct EventWaiter {
        var continuation: UnsafeContinuation<QMPEvent, Error>
        var name: String
        var pattern: JSONValue?
        var after: UInt64
        var deadline: ContinuousClock.Instant
        var timeout: Duration
    }

    struct HistoryEntry {
        var event: QMPEvent
        var consumed = false
    }

    struct State {
        /// Ids never used yet start here; `freeIDs` holds answered ones for reuse.
        var nextFreshID: UInt64 = 0
        var freeIDs: [UInt64] = []
        /// Ids of commands given up on (timeout, cancellation) whose reply may still come.
        var retiredIDs: Set<UInt64> = []
        var pending: [UInt64: PendingCommand] = [:]
        var greeting: QMPGreeting?
        var greetingWaiter: (continuation: UnsafeContinuation<QMPGreeting, Error>, deadline: ContinuousClock.Instant)?
        var closedReason: String?
        var history: [HistoryEntry] = []
        var historyStart = 0
        var lastEventSequence: UInt64 = 0
        var nextWaiterKey: UInt64 = 0
        var eventWaiters: [UInt64: EventWaiter] = [:]
        var subscribers: [UInt64: AsyncStream<QMPEvent>.Continuation] = [:]
        var plannedWake: ContinuousClock.Instant?
        var decodingErrors: [QMPDecodingError] = []
        /// The message that broke the connection; the close that follows fails pending calls with it.
        var malformedMessage: QMPDecodingError?
        var unmatchedReplies = 0
    }

    private init(eventHistoryLimit: Int, timeouts: QMPTimeouts) {
        self.eventHistoryLimit = eventHistoryLimit
        self.timeouts = timeouts
        self.state = Mutex(State())
    }

    deinit {
        channel?.close()
    }

    // MARK: Connecting

    /// Connects to QEMU's QMP socket at `path`, reads the greeting and,
    /// unless `negotiate` is false, leaves capabilities negotiation mode.
    public static func connect(
        path: String, negotiate: Bool = true, enableOOB: Bool = false, timeout: Duration = .seconds(5),
        eventHistoryLimit: Int = 1024, timeouts: QMPTimeouts = QMPTimeouts()
    ) async throws -> QMPClient {
        let fd: Int32
        do {
            fd = try UnixSocket.connect(path: path)
        } catch {
            throw QMPError.connect(error.description)
        }
        return try await adopt(
            fd: fd, negotiate: negotiate, enableOOB: enableOOB, timeout: timeout,
            eventHistoryLimit: eventHistoryLimit, timeouts: timeouts)
    }

    /// Adopts an already-connected socket (e.g. one end of a socketpair whose
    /// other end QEMU got with `-chardev socket,fd=N`). The client closes it.
    public static func adopt(
        fd: Int32, negotiate: Bool = true, enableOOB: Bool = false, timeout: Duration = .seconds(5),
        eventHistoryLimit: Int = 1024, timeouts: QMPTimeouts = QMPTimeouts()
    ) async throws -> QMPClient {
        let client = QMPClient(eventHistoryLimit: eventHistoryLimit, timeouts: timeouts)
        do {
            client.channel = try MessageChannel(
                adopting: fd,
                nextDeadline: { [weak client] in client?.nextDeadline() },
                handler: { [weak client] input in client?.handle(input) })
            try client.channel.start()
        } catch {
            Glibc.close(fd)
            throw QMPError.connect(error.description)
        }
        do {
            _ = try await client.greeting(timeout: timeout)
            if negotiate { try await client.negotiate(enableOOB: enableOOB) }
        } catch {
            client.close()
            throw error
        }
        return client
    }

    /// Waits for QEMU's greeting (it is the first thing QEMU sends).
    public func greeting(timeout: Duration = .seconds(5)) async throws -> QMPGreeting {
        let deadline = ContinuousClock.now + timeout
        return try await withUnsafeThrowingContinuation { continuation in
            let immediate: Result<QMPGreeting, Error>? = state.withLock { s in
                if let greeting = s.greeting { return .success(greeting) }
                if let reason = s.closedReason { return .failure(QMPError.disconnected(reason)) }
                s.greetingWaiter = (continuation, deadline)
                return nil
            }
            if let immediate { continuation.resume(with: immediate) } else { channel.wake() }
        }
    }

    /// `qmp_capabilities`, enabling out-of-band execution when asked for and offered.
    public func negotiate(enableOOB: Bool = false) async throws {
        let offered = state.withLock { $0.greeting?.capabilities ?? [] }
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
    public var executor: ReaderThreadExecutor { channel.executor }

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
        try await withTaskExecutorPreference(channel.executor, isolation: isolation, operation: operation)
    }

    /// Closes the connection; pending calls fail with `.disconnected`.
    public func close() {
        channel?.close()
    }

    /// Why the connection ended, or nil while it is open.
    public var closedReason: String? { state.withLock { $0.closedReason } }

    /// Lines that did not decode (garbage, bad UTF-8, ...), most recent
    /// last; the first one closes the connection.
    public var decodingErrors: [QMPDecodingError] { state.withLock { $0.decodingErrors } }

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
        let id = state.withLock { s in
            if let reused = s.freeIDs.popLast() { return reused }
            defer { s.nextFreshID += 1 }
            return s.nextFreshID
        }
        let bytes: [UInt8]
        do {
            bytes = try Self.encodeCommand(command, arguments: arguments, id: id, outOfBand: outOfBand)
        } catch {
            state.withLock { $0.freeIDs.append(id) }
            throw QMPError.encoding(error.description)
        }
        let limit = timeout ?? timeouts.timeout(for: command, arguments: arguments)
        let deadline = ContinuousClock.now + limit

        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<JSONValue, Error>) in
                let (closed, mustWake): (String?, Bool) = state.withLock { s in
                    if let reason = s.closedReason { return (reason, false) }
                    s.pending[id] = PendingCommand(continuation: continuation, command: command, deadline: deadline, timeout: limit)
                    return (nil, s.plannedWake.map { deadline < $0 } ?? true)
                }
                if let closed {
                    continuation.resume(throwing: QMPError.disconnected(closed))
                    return
                }
                // Cancelled before the handler below was installed: do not send.
                // (Cancelled later, the handler finds the command pending.)
                if Task.isCancelled {
                    let unsent: PendingCommand? = state.withLock { s in
                        guard let pending = s.pending.removeValue(forKey: id) else { return nil }
                        s.freeIDs.append(id)
                        return pending
                    }
                    unsent?.continuation.resume(throwing: QMPError.cancelled)
                    return
                }
                if mustWake { channel.wake() }
                do {
                    try channel.sendRaw(bytes)
                } catch {
                    if let pending = state.withLock({ $0.pending.removeValue(forKey: id) }) {
                        pending.continuation.resume(throwing: error)
                    }
                }
            }
        } onCancel: {
            let pending: PendingCommand? = state.withLock { s in
                guard let pending = s.pending.removeValue(forKey: id) else { return nil }
                s.retiredIDs.insert(id)
                return pending
            }
            pending?.continuation.resume(throwing: QMPError.cancelled)
        }
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
        QMPEventMark(sequence: state.withLock { $0.lastEventSequence })
    }

    /// The retained events, oldest first.
    public var eventHistory: [QMPEvent] {
        state.withLock { s in s.history[s.historyStart...].map(\.event) }
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
        let deadline = ContinuousClock.now + timeout
        let key = state.withLock { s in
            s.nextWaiterKey += 1
            return s.nextWaiterKey
        }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<QMPEvent, Error>) in
                let immediate: Result<QMPEvent, Error>? = state.withLock { s in
                    let after = mark?.sequence ?? 0
                    for index in s.history.indices.dropFirst(s.historyStart) {
                        let entry = s.history[index]
                        if !entry.consumed && entry.event.sequence > after && Self.matches(entry.event, name, pattern) {
                            s.history[index].consumed = true
                            return .success(entry.event)
                        }
                    }
                    if let reason = s.closedReason { return .failure(QMPError.disconnected(reason)) }
                    s.eventWaiters[key] = EventWaiter(
                        continuation: continuation, name: name, pattern: pattern, after: after, deadline: deadline,
                        timeout: timeout)
                    return nil
                }
                if let immediate {
                    continuation.resume(with: immediate)
                } else if Task.isCancelled {
                    // Cancelled before the handler below was installed.
                    state.withLock { $0.eventWaiters.removeValue(forKey: key) }?.continuation.resume(throwing: QMPError.cancelled)
                } else {
                    channel.wake()
                }
            }
        } onCancel: {
            if let waiter = state.withLock({ $0.eventWaiters.removeValue(forKey: key) }) {
                waiter.continuation.resume(throwing: QMPError.cancelled)
            }
        }
    }

    /// Every event from now on, in order, unbounded (none is dropped). The
    /// stream finishes when the connection closes.
    public func events() -> AsyncStream<QMPEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: QMPEvent.self, bufferingPolicy: .unbounded)
        let key: UInt64? = state.withLock { s in
            if s.closedReason != nil { return nil }
            s.nextWaiterKey += 1
            s.subscribers[s.nextWaiterKey] = continuation
            return s.nextWaiterKey
        }
        guard let key else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: key) }
        }
        return stream
    }

    static func matches(_ event: QMPEvent, _ name: String, _ pattern: JSONValue?) -> Bool {
        event.name == name && (pattern.map { event.data.contains($0) } ?? true)
    }

    // MARK: Reader side

    private func nextDeadline() -> ContinuousClock.Instant? {
        state.withLock { s in
            var earliest = ContinuousClock.now + Self.maximumPollInterval
            for pending in s.pending.values where pending.deadline < earliest { earliest = pending.deadline }
            for waiter in s.eventWaiters.values where waiter.deadline < earliest { earliest = waiter.deadline }
            if let greeting = s.greetingWaiter, greeting.deadline < earliest { earliest = greeting.deadline }
            s.plannedWake = earliest
            return earliest
        }
    }

    private func handle(_ input: ChannelInput) {
        switch input {
        case .message(let message):
            if let id = message["id"], message["return"] != nil || message["error"] != nil {
                deliverReply(message, id: id)
            } else if message["event"] != nil {
                deliverEvent(message)
            } else if message["QMP"] != nil {
                deliverGreeting(message)
            } else if message["error"] != nil {
                // An error without id: QEMU could not parse a command at all.
                state.withLock { $0.unmatchedReplies += 1 }
            } else {
                state.withLock { $0.unmatchedReplies += 1 }
            }
        case .decodingError(let error):
            state.withLock { s in
                s.decodingErrors.append(error)
                if s.decodingErrors.count > 64 { s.decodingErrors.removeFirst() }
                // A stream cut inside a message is a lost connection, not a broken peer.
                if case .truncated = error {} else if s.malformedMessage == nil { s.malformedMessage = error }
            }
        case .tick:
            expireDeadlines()
        case .closed(let reason):
            failEverything(reason)
        }
    }

    private func deliverReply(_ message: JSONObject, id: JSONValue) {
        let pending: PendingCommand? = state.withLock { s in
            guard let key = id.uint64Value else {
                s.unmatchedReplies += 1
                return nil
            }
            if let pending = s.pending.removeValue(forKey: key) {
                s.freeIDs.append(key)
                return pending
            }
            // A late reply to a command given up on: its id is free again.
            if s.retiredIDs.remove(key) != nil { s.freeIDs.append(key) }
            s.unmatchedReplies += 1
            return nil
        }
        guard let pending else { return }
        if let value = message["return"] {
            pending.continuation.resume(returning: value)
        } else {
            let error = message["error"]
            pending.continuation.resume(
                throwing: QMPError.command(
                    name: pending.command,
                    errorClass: error?["class"]?.stringValue ?? "GenericError",
                    description: error?["desc"]?.stringValue ?? "(no description)"))
        }
    }

    private func deliverGreeting(_ message: JSONObject) {
        guard let greeting = QMPGreeting(message) else { return }
        let waiter = state.withLock { s in
            s.greeting = greeting
            defer { s.greetingWaiter = nil }
            return s.greetingWaiter
        }
        waiter?.continuation.resume(returning: greeting)
    }

    private func deliverEvent(_ message: JSONObject) {
        let (event, waiter, subscribers): (QMPEvent?, EventWaiter?, [AsyncStream<QMPEvent>.Continuation]) = state.withLock { s in
            guard let event = QMPEvent(message, sequence: s.lastEventSequence + 1) else { return (nil, nil, []) }
            s.lastEventSequence += 1
            var consumed = false
            var satisfied: EventWaiter?
            // The oldest matching waiter gets it.
            var oldest: UInt64?
            for (key, waiter) in s.eventWaiters
            where waiter.after < event.sequence && Self.matches(event, waiter.name, waiter.pattern) {
                if oldest.map({ key < $0 }) ?? true { oldest = key }
            }
            if let oldest {
                satisfied = s.eventWaiters.removeValue(forKey: oldest)
                consumed = true
            }
            s.history.append(HistoryEntry(event: event, consumed: consumed))
            if s.history.count - s.historyStart > eventHistoryLimit { s.historyStart += 1 }
            if s.historyStart > eventHistoryLimit {
                s.history.removeFirst(s.historyStart)
                s.historyStart = 0
            }
            return (event, satisfied, Array(s.subscribers.values))
        }
        guard let event else { return }
        waiter?.continuation.resume(returning: event)
        for subscriber in subscribers { subscriber.yield(event) }
    }

    private func expireDeadlines() {
        let now = ContinuousClock.now
        let due = state.withLock { s in
            s.pending.values.contains { $0.deadline <= now } || s.eventWaiters.values.contains { $0.deadline <= now }
                || (s.greetingWaiter.map { $0.deadline <= now } ?? false)
        }
        guard due else { return }
        let (commands, waiters, greeting) = state.withLock { s in
            let commands = s.pending.filter { $0.value.deadline <= now }
            for key in commands.keys {
                s.pending.removeValue(forKey: key)
                s.retiredIDs.insert(key)
            }
            let waiters = s.eventWaiters.filter { $0.value.deadline <= now }
            for key in waiters.keys { s.eventWaiters.removeValue(forKey: key) }
            var greeting: UnsafeContinuation<QMPGreeting, Error>?
            if let waiter = s.greetingWaiter, waiter.deadline <= now {
                greeting = waiter.continuation
                s.greetingWaiter = nil
            }
            return (commands, waiters, greeting)
        }
        for pending in commands.values {
            pending.continuation.resume(throwing: QMPError.timeout(command: pending.command, seconds: pending.timeout.inSeconds))
        }
        for waiter in waiters.values {
            waiter.continuation.resume(throwing: QMPError.timeout(command: "waiting for event \(waiter.name)", seconds: waiter.timeout.inSeconds))
        }
        greeting?.resume(throwing: QMPError.protocolViolation(
            "no QMP greeting from QEMU in time; QEMU serves one client per monitor socket, so another client (e.g. a running `qlab run`) may hold it"))
    }

    private func failEverything(_ reason: String) {
        let (commands, waiters, greeting, subscribers, malformed) = state.withLock { s in
            s.closedReason = s.malformedMessage.map { "QEMU sent a malformed message: \($0)" } ?? reason
            defer {
                s.pending = [:]
                s.eventWaiters = [:]
                s.greetingWaiter = nil
                s.subscribers = [:]
            }
            return (s.pending, s.eventWaiters, s.greetingWaiter, s.subscribers, s.malformedMessage)
        }
        func failure(_ during: String) -> QMPError {
            if let malformed { return .protocolViolation("QEMU sent a malformed message \(during): \(malformed)") }
            return .disconnected("\(reason) \(during)")
        }
        for pending in commands.values {
            pending.continuation.resume(throwing: failure("while \(pending.command) was pending"))
        }
        for waiter in waiters.values {
            waiter.continuation.resume(throwing: failure("while waiting for event \(waiter.name)"))
        }
        greeting?.continuation.resume(throwing: failure("before the QMP greeting"))
        for subscriber in subscribers.values { subscriber.finish() }
    }
}
