import Platform
import QMP
import Synchronization

/// The byte stream of a serial console socket.
///
/// The reading is QMP's and the guest agent's machinery, ``ByteStreamChannel``
/// (a reader thread polling the socket and a self-pipe), which appends what
/// arrives to a bounded buffer addressed by stream offsets (offset 0 is the
/// first byte received). Waits register a pattern and a deadline; the reader
/// resumes them when the pattern appears, the deadline passes or the stream
/// ends. Writes go out on the caller's thread.
final class ConsoleStream: Sendable {
    enum WaitOutcome: Sendable {
        case matched(ConsoleMatch)
        case timedOut
        case closed(String)
        case cancelled
    }

    struct Waiter {
        var pattern: ConsolePattern
        var from: Int
        /// Where the next search starts: no match ends before the bytes seen so far.
        var scanFrom: Int
        var deadline: ContinuousClock.Instant
        var continuation: UnsafeContinuation<WaitOutcome, Never>
    }

    struct State {
        var buffer: [UInt8] = []
        /// The stream offset of `buffer[0]`.
        var base = 0
        var closedReason: String?
        var waiters: [UInt64: Waiter] = [:]
        var cancelledKeys: Set<UInt64> = []
        var nextKey: UInt64 = 0
    }

    /// The most bytes kept; older ones are dropped (a wait from before them searches what is left).
    let capacity: Int
    private let channel: ByteStreamChannel
    private let state = Mutex<State>(State())

    /// Adopts `fd`, a connected stream socket, on success (the stream closes it).
    init(adopting fd: Int32, capacity: Int = 4 << 20) throws(SystemCallError) {
        // Non-blocking: a write to a guest that takes no input waits with a timeout.
        FileDescriptor(rawValue: fd).setCloseOnExec(true)
        FileDescriptor(rawValue: fd).setNonBlocking()
        self.channel = try ByteStreamChannel(adopting: fd)
        self.capacity = max(capacity, 64 << 10)
    }

    deinit {
        channel.close()
    }

    /// Starts the reader thread, once.
    func start() throws(SystemCallError) {
        try channel.start(
            nextDeadline: { [weak self] in self?.state.withLock { s in s.waiters.values.map(\.deadline).min() } },
            handler: { [weak self] input in
                guard let self else { return false }
                switch input {
                case .bytes(let bytes):
                    let resumed = self.state.withLock { s in self.append(&s, bytes) }
                    for (continuation, outcome) in resumed { continuation.resume(returning: outcome) }
                case .tick:
                    self.expire()
                case .ended(let end):
                    switch end {
                    case .peerClosed: self.finish(reason: "QEMU closed the console socket (the lab stopped?)")
                    case .closedByOwner, .stoppedByHandler: self.finish(reason: "the console connection was closed by qlab")
                    case .readFailed(let error): self.finish(reason: "reading the console failed: \(error)")
                    case .pollFailed(let error): self.finish(reason: "poll on the console failed: \(error)")
                    }
                }
                return true
            })
    }

    /// Stops the reader and waits for it; pending waits end with `.closed`.
    /// Closing the socket is what tells QEMU the console is free for its next client.
    func close() {
        channel.close()
        finish(reason: "the console connection was closed by qlab")
    }

    /// The stream offset after the last byte received.
    var received: Int { state.withLock { $0.base + $0.buffer.count } }

    /// Why the stream ended, once it has.
    var closedReason: String? { state.withLock { $0.closedReason } }

    /// The bytes in `range` that are still buffered, and whether some of its beginning is gone.
    func bytes(_ range: Range<Int>) -> (bytes: [UInt8], truncated: Bool) {
        state.withLock { s in
            let lower = max(range.lowerBound, s.base)
            let upper = min(range.upperBound, s.base + s.buffer.count)
            guard lower < upper else { return ([], range.lowerBound < s.base && !range.isEmpty) }
            return (Array(s.buffer[(lower - s.base)..<(upper - s.base)]), range.lowerBound < s.base)
        }
    }

    /// The last `count` bytes received.
    func tail(_ count: Int) -> [UInt8] {
        state.withLock { s in Array(s.buffer.suffix(count)) }
    }

    /// Lets go of bytes before `offset`, keeping at least the last `keep` bytes for `tail`.
    func discard(before offset: Int, keep: Int = 16 << 10) {
        state.withLock { s in
            let end = s.base + s.buffer.count
            let cut = min(offset, end - keep) - s.base
            guard cut > 0 else { return }
            s.buffer.removeFirst(cut)
            s.base += cut
        }
    }

    /// Writes every byte, waiting on the caller's thread while the socket is full, at most `timeout`
    /// (for the synchronous public API; async code uses ``writeAsync(_:timeout:)``).
    func write(_ bytes: [UInt8], timeout: Duration = .seconds(10)) throws(GuestError) {
        if let reason = closedReason { throw GuestError.disconnected(reason: reason, consoleTail: "") }
        let result = bytes.withUnsafeBytes { raw in Result { () throws(StreamWriteError) in try channel.write(raw, timeout: timeout) } }
        try check(result, timeout: timeout)
    }

    /// Writes every byte; while the socket is full the task waits (the reader thread polls for room), at most `timeout`.
    func writeAsync(_ bytes: [UInt8], timeout: Duration = .seconds(10)) async throws(GuestError) {
        if let reason = closedReason { throw GuestError.disconnected(reason: reason, consoleTail: "") }
        let result: Result<Void, StreamWriteError>
        do throws(StreamWriteError) {
            try await channel.write(bytes, timeout: timeout)
            result = .success(())
        } catch {
            result = .failure(error)
        }
        try check(result, timeout: timeout)
    }

    private func check(_ result: Result<Void, StreamWriteError>, timeout: Duration) throws(GuestError) {
        switch result {
        case .success: return
        case .failure(.closed):
            throw GuestError.disconnected(reason: closedReason ?? "the console connection was closed by qlab", consoleTail: "")
        case .failure(.stalled):
            throw GuestError.consoleUnusable(reason: "the guest takes no input (the console socket stayed full for \(formatGuestSeconds(timeout.inSeconds)))", consoleTail: "")
        case .failure(.failed(let error)):
            throw GuestError.disconnected(reason: "writing to the console failed: \(error)", consoleTail: "")
        }
    }

    /// Waits until `pattern` appears at or after stream offset `from`.
    func wait(for pattern: ConsolePattern, from: Int, timeout: Duration) async -> WaitOutcome {
        let key = state.withLock { s -> UInt64 in
            s.nextKey += 1
            return s.nextKey
        }
        let deadline = ContinuousClock.now + timeout
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<WaitOutcome, Never>) in
                let immediate: WaitOutcome? = state.withLock { s in
                    if s.cancelledKeys.remove(key) != nil { return .cancelled }
                    let start = max(from, s.base)
                    if let match = Self.search(s, pattern, from: start) { return .matched(match) }
                    if let reason = s.closedReason { return .closed(reason) }
                    let scanFrom = max(start, s.base + s.buffer.count - pattern.overlap)
                    s.waiters[key] = Waiter(pattern: pattern, from: from, scanFrom: scanFrom, deadline: deadline, continuation: continuation)
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) } else { channel.wake() }
            }
        } onCancel: {
            let waiter = state.withLock { s -> Waiter? in
                if let waiter = s.waiters.removeValue(forKey: key) { return waiter }
                s.cancelledKeys.insert(key)
                return nil
            }
            waiter?.continuation.resume(returning: .cancelled)
        }
    }

    private static func search(_ s: State, _ pattern: ConsolePattern, from: Int) -> ConsoleMatch? {
        let start = from - s.base
        guard start >= 0, start <= s.buffer.count else { return nil }
        return s.buffer.withUnsafeBufferPointer { bytes in
            guard var match = ConsoleMatcher.firstMatch(pattern, in: bytes, from: start) else { return nil }
            match.start += s.base
            match.end += s.base
            return match
        }
    }

    /// Ends the stream once: records why and ends every wait.
    private func finish(reason: String) {
        let waiters = state.withLock { s -> [Waiter] in
            if s.closedReason == nil { s.closedReason = reason }
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for waiter in waiters { waiter.continuation.resume(returning: .closed(reason)) }
    }

    /// Ends the waits whose deadline has passed.
    private func expire() {
        let now = ContinuousClock.now
        let expired = state.withLock { s in
            let expired = s.waiters.filter { $0.value.deadline <= now }
            for key in expired.keys { s.waiters[key] = nil }
            return expired.values.map(\.continuation)
        }
        for continuation in expired { continuation.resume(returning: .timedOut) }
    }

    /// Appends received bytes, drops the oldest beyond `capacity`, and
    /// returns the waits whose pattern now matches.
    private func append(_ s: inout State, _ bytes: UnsafeRawBufferPointer) -> [(UnsafeContinuation<WaitOutcome, Never>, WaitOutcome)] {
        s.buffer.append(contentsOf: bytes)
        if s.buffer.count > capacity {
            let drop = s.buffer.count - capacity * 3 / 4
            s.buffer.removeFirst(drop)
            s.base += drop
        }
        var resumed: [(UnsafeContinuation<WaitOutcome, Never>, WaitOutcome)] = []
        let end = s.base + s.buffer.count
        for (key, var waiter) in s.waiters {
            if let match = Self.search(s, waiter.pattern, from: max(waiter.scanFrom, s.base)) {
                s.waiters[key] = nil
                resumed.append((waiter.continuation, .matched(match)))
            } else {
                waiter.scanFrom = max(waiter.from, end - waiter.pattern.overlap)
                s.waiters[key] = waiter
            }
        }
        return resumed
    }
}
