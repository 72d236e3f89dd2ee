import Platform
import Synchronization

/// Why a request or a wait ended without its answer.
public enum RequestFailure: Sendable {
    /// No answer within the timeout it was given.
    case timedOut(Duration)
    /// The connection ended while it was pending; says how.
    case closed(String)
    /// The peer sent a message that does not decode while it was pending (the connection then closed).
    case malformed(QMPDecodingError)
    /// The connection had already ended when the call began (the engine's `closedReason`).
    case alreadyClosed(String)
    /// Sending the request failed.
    case sendFailed(QMPError)
    /// The waiting task was cancelled.
    case cancelled
}

/// The pending table of a ``RequestEngine``: requests by wire id, other
/// waits (events, a greeting) by a local key, each with its deadline, plus
/// the client's own state (`extra`), all under the engine's one lock.
///
/// Ids are small integers, unique among the requests the peer may still
/// answer: an id is reused only once its reply has arrived; the id of a
/// request that timed out or was cancelled after it was sent stays retired
/// until its late reply comes, so a late reply never reaches another
/// request. Short ids matter: QEMU 7.2 reads QMP input one byte per
/// main-loop turn, about 3.5 us a byte here.
///
/// An entry leaves the table only into `finished`, which the engine drains
/// after the lock is released, resuming each continuation there: once, by
/// construction.
public struct RequestTable<Context: Sendable, Delivery: Sendable, Extra: Sendable>: Sendable {
    struct Entry {
        var continuation: UnsafeContinuation<Delivery, any Error>
        var context: Context
        var deadline: ContinuousClock.Instant
        var timeout: Duration
        /// Registration order (ids are reused, so they do not tell age).
        var order: UInt64 = 0
    }

    enum Ending {
        case answered(Result<Delivery, any Error>)
        case failed(RequestFailure)
    }

    /// The client's state, kept consistent with the table (e.g. QMP's event history).
    public var extra: Extra
    /// Why the connection ended, or nil while it is open.
    public internal(set) var closedReason: String?
    /// Replies that matched no pending request (stale, late or without a usable id).
    public private(set) var unmatchedReplies = 0

    var requests: [UInt64: Entry] = [:]
    var waits: [UInt64: Entry] = [:]
    var nextWaitKey: UInt64 = 0
    private var nextFreshID: UInt64 = 0
    private var freeIDs: [UInt64] = []
    private var retiredIDs: Set<UInt64> = []
    /// When the reader plans to look at deadlines next: a request due earlier wakes it.
    var plannedWake: ContinuousClock.Instant?
    /// The message that broke the connection; the close that follows fails pending calls with it.
    var malformed: QMPDecodingError?
    var decodingErrors: [QMPDecodingError] = []
    /// Taken out of the table, to be resumed once the lock is released.
    var finished: [(Entry, Ending)] = []

    init(extra: Extra) {
        self.extra = extra
    }

    // MARK: For clients (inside ``RequestEngine/update(_:)``)

    /// Answers request `id` with what `answer` makes of its context; nil
    /// leaves the request pending (the reply is not for it). A late reply to
    /// a request given up on frees its id. Returns whether a request took it.
    @discardableResult
    public mutating func answer(id: UInt64, _ answer: (Context) -> Result<Delivery, any Error>?) -> Bool {
        guard let entry = requests[id] else {
            if retiredIDs.remove(id) != nil { freeIDs.append(id) }
            unmatchedReplies += 1
            return false
        }
        guard let result = answer(entry.context) else {
            unmatchedReplies += 1
            return false
        }
        requests[id] = nil
        freeIDs.append(id)
        finished.append((entry, .answered(result)))
        return true
    }

    /// Answers the oldest pending request whose context satisfies `accepts`
    /// (a peer that does not echo ids). Returns whether one took it.
    @discardableResult
    public mutating func answerOldest(where accepts: (Context) -> Bool, _ answer: (Context) -> Result<Delivery, any Error>) -> Bool {
        guard let id = oldest(requests, where: accepts) else { return false }
        let entry = requests.removeValue(forKey: id)!
        freeIDs.append(id)
        finished.append((entry, .answered(answer(entry.context))))
        return true
    }

    /// Counts a reply nobody waits for.
    public mutating func noteUnmatchedReply() {
        unmatchedReplies += 1
    }

    /// Ends the oldest wait whose context satisfies `accepts` with `delivery`. Returns whether one did.
    @discardableResult
    public mutating func deliverToOldestWait(where accepts: (Context) -> Bool, _ delivery: Delivery) -> Bool {
        guard let key = oldest(waits, where: accepts) else { return false }
        finished.append((waits.removeValue(forKey: key)!, .answered(.success(delivery))))
        return true
    }

    /// Ends every wait whose context satisfies `accepts` with `delivery`.
    public mutating func deliverToWaits(where accepts: (Context) -> Bool, _ delivery: Delivery) {
        for (key, entry) in waits where accepts(entry.context) {
            waits[key] = nil
            finished.append((entry, .answered(.success(delivery))))
        }
    }

    private func oldest(_ table: [UInt64: Entry], where accepts: (Context) -> Bool) -> UInt64? {
        var oldest: (key: UInt64, order: UInt64)?
        for (key, entry) in table where accepts(entry.context) {
            if oldest.map({ entry.order < $0.order }) ?? true { oldest = (key, entry.order) }
        }
        return oldest?.key
    }

    // MARK: For the engine

    private var nextOrder: UInt64 = 0

    /// An id for a new request, and a ticket naming this use of it (ids are reused; tickets are not).
    mutating func allocateID() -> (id: UInt64, ticket: UInt64) {
        nextOrder += 1
        if let reused = freeIDs.popLast() { return (reused, nextOrder) }
        defer { nextFreshID += 1 }
        return (nextFreshID, nextOrder)
    }

    /// An id that never reached the peer is free again.
    mutating func release(_ id: UInt64) {
        freeIDs.append(id)
    }

    mutating func register(request id: UInt64, ticket: UInt64, _ entry: Entry) {
        var entry = entry
        entry.order = ticket
        requests[id] = entry
    }

    /// A key for a wait about to be registered.
    mutating func reserveWaitKey() -> UInt64 {
        nextWaitKey += 1
        return nextWaitKey
    }

    mutating func register(wait key: UInt64, _ entry: Entry) {
        var entry = entry
        nextOrder += 1
        entry.order = nextOrder
        waits[key] = entry
    }

    /// Takes a request that was not sent (cancelled first, or the send failed); its id is free again.
    mutating func withdraw(request id: UInt64, ticket: UInt64, _ failure: RequestFailure) {
        guard requests[id]?.order == ticket, let entry = requests.removeValue(forKey: id) else { return }
        freeIDs.append(id)
        finished.append((entry, .failed(failure)))
    }

    /// Gives up on a sent request: its id stays retired until the late reply comes.
    /// With `ticket`, only that use of the id (a cancellation may come after the reply freed it).
    mutating func giveUp(request id: UInt64, ticket: UInt64? = nil, _ failure: RequestFailure) {
        guard let entry = requests[id], ticket.map({ $0 == entry.order }) ?? true else { return }
        requests[id] = nil
        retiredIDs.insert(id)
        finished.append((entry, .failed(failure)))
    }

    mutating func giveUp(wait key: UInt64, _ failure: RequestFailure) {
        guard let entry = waits.removeValue(forKey: key) else { return }
        finished.append((entry, .failed(failure)))
    }

    /// The earliest deadline, at most `cap`; remembered as the planned wake-up.
    mutating func nextDeadline(cap: ContinuousClock.Instant) -> ContinuousClock.Instant {
        var earliest = cap
        for entry in requests.values where entry.deadline < earliest { earliest = entry.deadline }
        for entry in waits.values where entry.deadline < earliest { earliest = entry.deadline }
        plannedWake = earliest
        return earliest
    }

    /// Ends every request and wait whose deadline has passed.
    mutating func expire(now: ContinuousClock.Instant) {
        guard requests.values.contains(where: { $0.deadline <= now }) || waits.values.contains(where: { $0.deadline <= now }) else { return }
        for (id, entry) in requests where entry.deadline <= now { giveUp(request: id, .timedOut(entry.timeout)) }
        for (key, entry) in waits where entry.deadline <= now { giveUp(wait: key, .timedOut(entry.timeout)) }
    }

    /// The stream produced a message that does not decode: the close that follows reports it.
    mutating func noteDecodingError(_ error: QMPDecodingError) {
        decodingErrors.append(error)
        if decodingErrors.count > 64 { decodingErrors.removeFirst() }
        // A stream cut inside a message is a lost connection, not a broken peer.
        if case .truncated = error { return }
        if malformed == nil { malformed = error }
    }

    /// The connection ended: everything pending fails, and so does every later call.
    mutating func failAll(reason: String, closedReason describe: (String, QMPDecodingError?) -> String) {
        if closedReason == nil { closedReason = describe(reason, malformed) }
        let failure: RequestFailure = malformed.map { .malformed($0) } ?? .closed(reason)
        for entry in requests.values { finished.append((entry, .failed(failure))) }
        for entry in waits.values { finished.append((entry, .failed(failure))) }
        requests = [:]
        waits = [:]
    }
}

/// The request/reply engine QMP and the guest agent are built on, as
/// qemu.qmp builds its QMP client on a generic protocol class.
///
/// It owns a ``MessageChannel`` and a ``RequestTable``: it allocates ids,
/// sends requests, keeps their deadlines (they fire whatever the peer sends
/// meanwhile), fails everything pending at once when the connection ends or
/// the peer sends a message that does not decode, and ends a request or
/// wait whose task is cancelled, leaving the others be. The client supplies
/// the rest: how a request is encoded, how a received message is routed
/// (``update(_:)`` with ``RequestTable/answer(id:_:)`` and friends), and
/// what each failure looks like to its callers (``Policy``).
public final class RequestEngine<Context: Sendable, Delivery: Sendable, Extra: Sendable>: Sendable {
    public typealias Table = RequestTable<Context, Delivery, Extra>

    /// What the client decides.
    public struct Policy: Sendable {
        /// The error a caller gets for a failure of a request or wait with this context.
        public var failure: @Sendable (Context, RequestFailure) -> any Error
        /// The `closedReason` for a connection that ended with `reason` (and a malformed message, if that was it).
        public var closedReason: @Sendable (_ reason: String, _ malformed: QMPDecodingError?) -> String
        /// The reader re-checks deadlines at least this often, so a new call
        /// with a longer timeout need not wake it.
        public var maximumPollInterval: Duration

        public init(
            failure: @escaping @Sendable (Context, RequestFailure) -> any Error,
            closedReason: @escaping @Sendable (String, QMPDecodingError?) -> String = { reason, malformed in
                malformed.map { "the peer sent a malformed message: \($0)" } ?? reason
            },
            maximumPollInterval: Duration = .milliseconds(250)
        ) {
            self.failure = failure
            self.closedReason = closedReason
            self.maximumPollInterval = maximumPollInterval
        }
    }

    /// The transport: its executor, its raw sends.
    public let channel: MessageChannel
    private let policy: Policy
    private let table: Mutex<Table>

    /// Adopts `fd`, a connected stream socket, on success (the engine then
    /// closes it); on failure the caller still owns it.
    public init(adopting fd: Int32, decoder: QMPMessageDecoder = QMPMessageDecoder(), extra: Extra, policy: Policy) throws(SystemCallError) {
        self.channel = try MessageChannel(adopting: fd, decoder: decoder)
        self.policy = policy
        self.table = Mutex(Table(extra: extra))
    }

    deinit {
        channel.close()
    }

    /// Starts reading: `onMessage` gets every message on the reader thread
    /// (route it with ``update(_:)``); `onClosed` runs once everything
    /// pending has failed.
    public func start(
        onMessage: @escaping @Sendable (JSONObject) -> Void,
        onClosed: @escaping @Sendable () -> Void = {}
    ) throws(SystemCallError) {
        do {
            try channel.start(
                nextDeadline: { [weak self] in self?.nextDeadline() },
                handler: { [weak self] input in
                    guard let self else { return }
                    switch input {
                    case .message(let message): onMessage(message)
                    case .decodingError(let error): self.table.withLock { $0.noteDecodingError(error) }
                    case .tick: self.update { $0.expire(now: .now) }
                    case .closed(let reason):
                        self.failAll(reason: reason)
                        onClosed()
                    }
                })
        } catch {
            channel.close()
            throw error
        }
    }

    /// Closes the connection; everything pending fails (as a disconnection).
    public func close() {
        channel.close()
        // The channel delivered `.closed` unless its reader never ran.
        failAll(reason: "the connection was closed by qlab")
    }

    /// Why the connection ended, or nil while it is open.
    public var closedReason: String? { table.withLock { $0.closedReason } }

    /// Messages that did not decode, most recent last (at most 64); the first one not a truncation closes the connection.
    public var decodingErrors: [QMPDecodingError] { table.withLock { $0.decodingErrors } }

    /// Runs `body` on the table under the engine's lock, then resumes what it answered.
    public func update<R>(_ body: (inout Table) throws -> R) rethrows -> R {
        let (result, finished) = try table.withLock { t in
            let result = try body(&t)
            var finished: [(Table.Entry, Table.Ending)] = []
            if !t.finished.isEmpty { swap(&finished, &t.finished) }
            return (result, finished)
        }
        for (entry, ending) in finished { resume(entry, ending) }
        return result
    }

    /// Sends a request and waits for its answer. `encode` makes the bytes
    /// for an id (the line end included); it runs before anything is sent.
    public func request(
        _ context: Context, timeout: Duration, encode: (UInt64) throws -> [UInt8]
    ) async throws -> Delivery {
        let (id, ticket) = table.withLock { $0.allocateID() }
        let bytes: [UInt8]
        do {
            bytes = try encode(id)
        } catch {
            table.withLock { $0.release(id) }
            throw error
        }
        let deadline = ContinuousClock.now + timeout
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Delivery, any Error>) in
                let (closed, mustWake): (String?, Bool) = table.withLock { t in
                    if let reason = t.closedReason { return (reason, false) }
                    t.register(request: id, ticket: ticket, .init(continuation: continuation, context: context, deadline: deadline, timeout: timeout))
                    return (nil, t.plannedWake.map { deadline < $0 } ?? true)
                }
                if let closed {
                    // Never entered the table: resumed here only.
                    continuation.resume(throwing: policy.failure(context, .alreadyClosed(closed)))
                    return
                }
                // Cancelled before the handler below was installed: do not send.
                // (Cancelled later, the handler finds the request pending.)
                if Task.isCancelled {
                    update { $0.withdraw(request: id, ticket: ticket, .cancelled) }
                    return
                }
                if mustWake { channel.wake() }
                do throws(QMPError) {
                    try channel.sendRaw(bytes)
                } catch {
                    update { $0.withdraw(request: id, ticket: ticket, .sendFailed(error)) }
                }
            }
        } onCancel: {
            update { $0.giveUp(request: id, ticket: ticket, .cancelled) }
        }
    }

    /// Waits for something the client delivers with
    /// ``RequestTable/deliverToOldestWait(where:_:)`` (an event, a
    /// greeting). `immediate` runs first, under the lock: what it returns
    /// ends the wait at once (e.g. an event already in the history).
    public func wait(
        _ context: Context, timeout: Duration, immediate: (inout Table) -> Result<Delivery, any Error>? = { _ in nil }
    ) async throws -> Delivery {
        let deadline = ContinuousClock.now + timeout
        let key = table.withLock { $0.reserveWaitKey() }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Delivery, any Error>) in
                let (now, mustWake): (Result<Delivery, any Error>?, Bool) = table.withLock { t in
                    if let result = immediate(&t) { return (result, false) }
                    if let reason = t.closedReason { return (.failure(policy.failure(context, .alreadyClosed(reason))), false) }
                    t.register(wait: key, .init(continuation: continuation, context: context, deadline: deadline, timeout: timeout))
                    return (nil, t.plannedWake.map { deadline < $0 } ?? true)
                }
                if let now {
                    // Never entered the table: resumed here only.
                    continuation.resume(with: now)
                    return
                }
                if Task.isCancelled {
                    // Cancelled before the handler below was installed.
                    update { $0.giveUp(wait: key, .cancelled) }
                } else if mustWake {
                    channel.wake()
                }
            }
        } onCancel: {
            update { $0.giveUp(wait: key, .cancelled) }
        }
    }

    // MARK: Reader side

    private func nextDeadline() -> ContinuousClock.Instant? {
        let cap = ContinuousClock.now + policy.maximumPollInterval
        return table.withLock { $0.nextDeadline(cap: cap) }
    }

    private func failAll(reason: String) {
        update { $0.failAll(reason: reason, closedReason: policy.closedReason) }
    }

    private func resume(_ entry: Table.Entry, _ ending: Table.Ending) {
        switch ending {
        case .answered(let result): entry.continuation.resume(with: result)
        case .failed(let failure): entry.continuation.resume(throwing: policy.failure(entry.context, failure))
        }
    }
}
