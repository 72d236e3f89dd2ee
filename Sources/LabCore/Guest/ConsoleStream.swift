#if canImport(Glibc)
import Glibc
#endif
import QMP
import Synchronization

/// The byte stream of a serial console socket.
///
/// A reader thread blocks in `poll(2)` on the socket and a self-pipe, and
/// appends what arrives to a bounded buffer addressed by stream offsets
/// (offset 0 is the first byte received). Waits register a pattern and a
/// deadline; the reader resumes them when the pattern appears, the deadline
/// passes or the stream ends. Writes go out on the caller's thread.
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
        var stopRequested = false
        var started = false
        var thread: pthread_t?
    }

    /// The most bytes kept; older ones are dropped (a wait from before them searches what is left).
    let capacity: Int
    private let fd: Int32
    private let wakeReadFD: Int32
    private let wakeWriteFD: Int32
    private let state = Mutex<State>(State())
    /// Held while writing and while closing: true once `fd` is closed.
    private let fdClosed = Mutex<Bool>(false)

    /// Adopts `fd`, a connected stream socket; the stream closes it.
    init(adopting fd: Int32, capacity: Int = 4 << 20) throws(SystemCallError) {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw SystemCallError("pipe") }
        for end in ends + [fd] {
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
        }
        self.fd = fd
        self.wakeReadFD = ends[0]
        self.wakeWriteFD = ends[1]
        self.capacity = max(capacity, 64 << 10)
    }

    deinit {
        fdClosed.withLock { closed in if !closed { Glibc.close(fd) } }
        Glibc.close(wakeReadFD)
        Glibc.close(wakeWriteFD)
    }

    /// Starts the reader thread (`pthread_create(3)`), once.
    func start() throws(SystemCallError) {
        let result: Int32 = state.withLock { s in
            guard !s.started else { return 0 }
            s.started = true
            let box = Unmanaged.passRetained(self).toOpaque()
            var thread = pthread_t()
            let result = pthread_create(&thread, nil, { raw in
                let stream = Unmanaged<ConsoleStream>.fromOpaque(raw!).takeRetainedValue()
                stream.readLoop()
                return nil
            }, box)
            if result == 0 { s.thread = thread } else { Unmanaged<ConsoleStream>.fromOpaque(box).release() }
            return result
        }
        if result != 0 { throw SystemCallError("pthread_create", errno: result) }
    }

    /// Stops the reader and waits for it; pending waits end with `.closed`.
    func close() {
        let thread = state.withLock { s -> pthread_t? in
            s.stopRequested = true
            defer { s.thread = nil }
            return s.thread
        }
        wake()
        if let thread { pthread_join(thread, nil) }
        finish(reason: "the console connection was closed by qlab")
        // Closing the socket is what tells QEMU the console is free for its next client.
        fdClosed.withLock { closed in
            if !closed { Glibc.close(fd) }
            closed = true
        }
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

    /// Writes every byte with `send(2)` (MSG_NOSIGNAL), waiting with `poll(2)` while the socket is full.
    func write(_ bytes: [UInt8], timeout: Duration = .seconds(10)) throws(GuestError) {
        let result = fdClosed.withLock { closed -> Result<Void, GuestError> in
            if closed { return .failure(GuestError.disconnected(reason: "the console connection was closed by qlab", consoleTail: "")) }
            return Result { () throws(GuestError) in try writeOpen(bytes, timeout: timeout) }
        }
        try result.get()
    }

    private func writeOpen(_ bytes: [UInt8], timeout: Duration) throws(GuestError) {
        if let reason = closedReason { throw GuestError.disconnected(reason: reason, consoleTail: "") }
        let deadline = ContinuousClock.now + timeout
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n >= 0 {
                offset += n
                continue
            }
            let error = errno
            if error == EINTR { continue }
            guard error == EAGAIN || error == EWOULDBLOCK else {
                throw GuestError.disconnected(reason: "writing to the console failed: \(SystemCallError("send", errno: error))", consoleTail: "")
            }
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else {
                throw GuestError.consoleUnusable(reason: "the guest takes no input (the console socket stayed full for \(formatGuestSeconds(timeout.inSeconds)))", consoleTail: "")
            }
            var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&poller, 1, Int32(clamping: remaining.components.seconds * 1000 + 10))
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
                if let immediate { continuation.resume(returning: immediate) } else { wake() }
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

    private func wake() {
        var one: UInt8 = 1
        _ = Glibc.write(wakeWriteFD, &one, 1)  // EAGAIN: the pipe is full, a wake is pending anyway
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

    private func readLoop() {
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
        defer { chunk.deallocate() }
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeReadFD, events: Int16(POLLIN), revents: 0)]
        var reason = "the console connection was closed by qlab"
        while true {
            let (stop, deadline) = state.withLock { s in (s.stopRequested, s.waiters.values.map(\.deadline).min()) }
            if stop { break }
            var timeout: Int32 = -1
            if let deadline {
                let remaining = ContinuousClock.now.duration(to: deadline)
                timeout = Int32(clamping: max(0, remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000 + 1))
            }
            fds[0].revents = 0
            fds[1].revents = 0
            let ready = poll(&fds, 2, timeout)
            if ready < 0 {
                if errno == EINTR { continue }
                reason = "poll on the console failed: \(SystemCallError("poll"))"
                break
            }
            if fds[1].revents != 0 {
                var drain = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
                while read(wakeReadFD, &drain, 32) > 0 {}
            }
            var resumed: [(UnsafeContinuation<WaitOutcome, Never>, WaitOutcome)] = []
            if fds[0].revents != 0 {
                let n = read(fd, chunk.baseAddress!, chunk.count)
                if n == 0 {
                    reason = "QEMU closed the console socket (the lab stopped?)"
                    break
                }
                if n < 0 {
                    if errno != EINTR && errno != EAGAIN {
                        reason = "reading the console failed: \(SystemCallError("read"))"
                        break
                    }
                } else {
                    resumed = state.withLock { s in append(&s, UnsafeRawBufferPointer(rebasing: chunk[0..<n])) }
                }
            }
            let now = ContinuousClock.now
            resumed += state.withLock { s in
                let expired = s.waiters.filter { $0.value.deadline <= now }
                for key in expired.keys { s.waiters[key] = nil }
                return expired.values.map { ($0.continuation, WaitOutcome.timedOut) }
            }
            for (continuation, outcome) in resumed { continuation.resume(returning: outcome) }
        }
        finish(reason: reason)
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
