#if canImport(Glibc)
import Glibc
#endif
import Platform
import Synchronization

/// How a ``ByteStreamChannel``'s stream ended.
public enum StreamEnd: Sendable, Hashable {
    /// The peer closed its end (`read(2)` returned 0).
    case peerClosed
    /// ``ByteStreamChannel/close()`` was called.
    case closedByOwner
    /// The handler refused the bytes (e.g. a malformed message).
    case stoppedByHandler
    case readFailed(SystemCallError)
    case pollFailed(SystemCallError)
}

/// What a ``ByteStreamChannel``'s reader hands its handler, on the reader thread.
public enum StreamInput {
    /// Bytes as they arrived; valid only during the call.
    case bytes(UnsafeRawBufferPointer)
    /// A deadline may have passed (see ``ByteStreamChannel``).
    case tick
    /// The stream ended; nothing follows. The descriptor is already closed.
    case ended(StreamEnd)
}

/// Why ``ByteStreamChannel/write(_:timeout:)`` failed.
public enum StreamWriteError: Error, Sendable, Hashable {
    /// The channel was closed (by its owner or because the stream ended).
    case closed
    /// The socket stayed full (the peer reads nothing) for the whole timeout.
    case stalled
    case failed(SystemCallError)
}

/// A connected stream socket read by a thread of its own: the machinery
/// shared by QMP and the guest agent (through ``MessageChannel``, which
/// frames the bytes into JSON messages) and the serial console (raw bytes).
///
/// The reader thread blocks in `poll(2)` on the socket and a self-pipe used
/// for wake-ups, and hands what it reads to the handler, in order. Deadlines
/// are the owner's: `nextDeadline` is asked before each poll, and `.tick`
/// follows a poll that timed out or was woken, or any poll once that
/// deadline has passed, so a steady stream of input cannot hold a deadline
/// off. Writes happen on the caller's thread under a lock.
///
/// The reader thread is also a task executor (``executor``): between polls
/// it runs the jobs of tasks that prefer it.
///
/// ``close()`` shuts the socket down and waits, event-driven, for the reader
/// to deliver `.ended`: it polls a pipe whose write end the reader closes as
/// its last act, so any number of closers wait without joining or sleeping.
public final class ByteStreamChannel: Sendable {
    /// Called on the reader thread; returns false to stop reading (the stream then ends with `.stoppedByHandler`).
    public typealias Handler = @Sendable (StreamInput) -> Bool

    /// Runs preferring tasks on the reader thread; also holds the wake-up pipe.
    public let executor: ReaderThreadExecutor
    private let fd: Int32
    private let writeLock = Mutex<Bool>(false)  // true once closed for writing
    private let state = Mutex<State>(State())
    /// Readable (end of file) once the reader has ended: closers poll it.
    private let endedReadFD: Int32
    private let endedWriteFD: Int32

    struct State {
        var started = false
        var stopRequested = false
        /// fd is closed (by `finish`).
        var fdClosed = false
        var handler: Handler?
        var nextDeadline: (@Sendable () -> ContinuousClock.Instant?)?
        /// The reader thread's identity, while it runs.
        var readerThread: pthread_t?
        /// Async writers waiting for room in the socket: the reader polls for POLLOUT for them.
        var writers: [UInt64: Writer] = [:]
        var nextWriterKey: UInt64 = 0
    }

    struct Writer {
        var continuation: UnsafeContinuation<Void, Never>
        var deadline: ContinuousClock.Instant
    }

    /// Adopts `fd` (a connected stream socket); the channel closes it.
    public init(adopting fd: Int32) throws(SystemCallError) {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw SystemCallError("pipe") }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        do {
            self.executor = try ReaderThreadExecutor()
        } catch {
            Glibc.close(ends[0])
            Glibc.close(ends[1])
            throw error
        }
        self.fd = fd
        self.endedReadFD = ends[0]
        self.endedWriteFD = ends[1]
    }

    deinit {
        // The reader holds the channel until it ends, so it is not running here.
        let (closeFD, started) = state.withLock { s in (!s.fdClosed, s.started) }
        if closeFD { Glibc.close(fd) }
        if !started { Glibc.close(endedWriteFD) }
        Glibc.close(endedReadFD)
    }

    /// Starts the reader thread (once) with `pthread_create(3)`, detached.
    public func start(
        nextDeadline: @escaping @Sendable () -> ContinuousClock.Instant? = { nil },
        handler: @escaping Handler
    ) throws(SystemCallError) {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        // Converting a deeply nested jansson tree recurses, and preferring
        // tasks run here too: give it room.
        pthread_attr_setstacksize(&attributes, 16 << 20)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        // Created under the lock, so the thread's identity is stored before
        // anything (the thread's own first step, a close) can ask for it.
        let result: Int32? = state.withLock { s in
            guard !s.started, !s.stopRequested else { return nil }
            s.handler = handler
            s.nextDeadline = nextDeadline
            let box = Unmanaged.passRetained(self).toOpaque()
            var thread = pthread_t()
            let result = pthread_create(&thread, &attributes, { raw in
                let channel = Unmanaged<ByteStreamChannel>.fromOpaque(raw!).takeRetainedValue()
                channel.readLoop()
                return nil
            }, box)
            if result == 0 {
                s.started = true
                s.readerThread = thread
            } else {
                s.handler = nil
                Unmanaged<ByteStreamChannel>.fromOpaque(box).release()
            }
            return result
        }
        if let result, result != 0 { throw SystemCallError("pthread_create", errno: result) }
    }

    /// Writes every byte with `send(2)` (MSG_NOSIGNAL; `write(2)` for a
    /// non-socket). On a non-blocking descriptor that is full it waits for
    /// room with `poll(2)`, at most `timeout` (nil: as long as it takes).
    public func write(_ bytes: UnsafeRawBufferPointer, timeout: Duration? = nil) throws(StreamWriteError) {
        let failure: StreamWriteError? = writeLock.withLock { closed -> StreamWriteError? in
            if closed { return .closed }
            let deadline = timeout.map { ContinuousClock.now + $0 }
            var offset = 0
            while offset < bytes.count {
                var n = send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
                if n < 0 && errno == ENOTSOCK { n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
                if n >= 0 {
                    offset += n
                    continue
                }
                let error = errno
                if error == EINTR { continue }
                guard error == EAGAIN || error == EWOULDBLOCK else { return .failed(SystemCallError("send", errno: error)) }
                var milliseconds: Int32 = -1
                if let deadline {
                    let remaining = ContinuousClock.now.duration(to: deadline)
                    guard remaining > .zero else { return .stalled }
                    milliseconds = Self.milliseconds(remaining)
                }
                var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&poller, 1, milliseconds)
            }
            return nil
        }
        if let failure { throw failure }
    }

    /// Writes every byte without blocking the calling thread: when the
    /// socket is full, the task waits for the reader thread to see room
    /// (POLLOUT), at most `timeout` in all. One writer at a time: concurrent
    /// writes may interleave.
    public func write(_ bytes: [UInt8], timeout: Duration) async throws(StreamWriteError) {
        let deadline = ContinuousClock.now + timeout
        var offset = 0
        while offset < bytes.count {
            let result: Result<Int, StreamWriteError> = writeLock.withLock { closed in
                if closed { return .failure(.closed) }
                return bytes.withUnsafeBytes { raw in
                    while true {
                        let n = send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                        if n >= 0 { return .success(n) }
                        let error = errno
                        if error == EINTR { continue }
                        if error == EAGAIN || error == EWOULDBLOCK { return .success(0) }
                        return .failure(.failed(SystemCallError("send", errno: error)))
                    }
                }
            }
            let written = try result.get()
            offset += written
            if written > 0 || offset == bytes.count { continue }
            guard ContinuousClock.now < deadline else { throw .stalled }
            await writable(until: deadline)
        }
    }

    /// Returns once the reader saw room in the socket, the stream ended or `deadline` passed.
    private func writable(until deadline: ContinuousClock.Instant) async {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let registered = state.withLock { s -> Bool in
                guard s.started, !s.fdClosed else { return false }
                s.nextWriterKey += 1
                s.writers[s.nextWriterKey] = Writer(continuation: continuation, deadline: deadline)
                return true
            }
            if registered {
                executor.wake()
            } else {
                // Never entered the table: resumed here only.
                continuation.resume()
            }
        }
    }

    /// Resumes the writers that may go on: all of them, or those whose deadline passed.
    private func releaseWriters(all: Bool) {
        let now = ContinuousClock.now
        let released = state.withLock { s -> [UnsafeContinuation<Void, Never>] in
            guard !s.writers.isEmpty else { return [] }
            let due = s.writers.filter { all || $0.value.deadline <= now }
            for key in due.keys { s.writers[key] = nil }
            return due.values.map(\.continuation)
        }
        for continuation in released { continuation.resume() }
    }

    /// Makes the reader's current or next poll return at once (it then re-reads `nextDeadline`).
    public func wake() {
        executor.wake()
    }

    /// Shuts the socket down; the handler's `.ended` has been delivered when
    /// this returns. Off the reader thread it waits for the reader to end
    /// (polling the ended pipe); on it (a preferring task closing), the
    /// reader ends as soon as the current job returns.
    public func close() {
        // Under the lock that `finish` holds when it closes fd, so the
        // shutdown never hits a closed (or reused) descriptor.
        let (started, onReader): (Bool, Bool) = state.withLock { s in
            s.stopRequested = true
            if !s.fdClosed { shutdown(fd, Int32(SHUT_RDWR)) }
            return (s.started, s.readerThread.map { pthread_equal($0, pthread_self()) != 0 } ?? false)
        }
        executor.wake()
        guard started, !onReader else {
            finish(.closedByOwner)
            return
        }
        var ended = pollfd(fd: endedReadFD, events: Int16(POLLIN), revents: 0)
        while poll(&ended, 1, -1) < 0 && errno == EINTR {}
    }

    /// Ends the stream once: no more writes, fd closed, `.ended` delivered.
    private func finish(_ end: StreamEnd) {
        writeLock.withLock { $0 = true }  // no write is in progress after this
        let handler: Handler?? = state.withLock { s in
            guard !s.fdClosed else { return .none }
            s.fdClosed = true
            Glibc.close(fd)
            defer { s.handler = nil; s.nextDeadline = nil }
            return .some(s.handler)
        }
        if case .some(.some(let handler)) = handler { _ = handler(.ended(end)) }
        releaseWriters(all: true)
    }

    static func milliseconds(_ duration: Duration) -> Int32 {
        let ms = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        return Int32(clamping: max(0, ms + 1))
    }

    private func readLoop() {
        executor.open()
        let (handler, nextDeadline) = state.withLock { s in (s.handler!, s.nextDeadline!) }
        let capacity = 256 << 10
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        let fds = UnsafeMutablePointer<pollfd>.allocate(capacity: 2)
        var spareJobs: [UnownedJob] = []
        defer {
            buffer.deallocate()
            fds.deallocate()
        }
        var end = StreamEnd.peerClosed
        while true {
            executor.runJobs(spare: &spareJobs)
            if state.withLock({ $0.stopRequested }) {
                end = .closedByOwner
                break
            }
            let writerDeadline = state.withLock { s in s.writers.isEmpty ? nil : s.writers.values.map(\.deadline).min() }
            fds[0] = pollfd(fd: fd, events: Int16(writerDeadline == nil ? POLLIN : POLLIN | POLLOUT), revents: 0)
            fds[1] = pollfd(fd: executor.wakeReadFD, events: Int16(POLLIN), revents: 0)
            let ownerDeadline = nextDeadline()
            let deadline = [ownerDeadline, writerDeadline].compactMap { $0 }.min()
            let timeout = deadline.map { Self.milliseconds(ContinuousClock.now.duration(to: $0)) } ?? -1
            let mayBlock = executor.prepareToSleep()
            let ready = poll(fds, 2, mayBlock ? timeout : 0)
            let pollErrno = errno
            let woken = fds[1].revents != 0
            executor.awoke(pipeReadable: woken)
            if ready < 0 && pollErrno != EINTR {
                end = .pollFailed(SystemCallError("poll", errno: pollErrno))
                break
            }
            if writerDeadline != nil {
                releaseWriters(all: fds[0].revents & Int16(POLLOUT | POLLERR | POLLHUP) != 0)
            }
            if ready > 0 && fds[0].revents & Int16(POLLIN | POLLERR | POLLHUP) != 0 {
                let n = read(fd, buffer.baseAddress!, capacity)
                if n == 0 { break }
                if n > 0 {
                    if !handler(.bytes(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))) {
                        end = .stoppedByHandler
                        break
                    }
                } else if errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK {
                    end = .readFailed(SystemCallError("read"))
                    break
                }
            }
            // Deadlines matter only when poll timed out or was woken for
            // them, or when input kept poll from timing out past the
            // deadline; skipping the check after a timely reply keeps that
            // path short.
            if ready == 0 || woken || !mayBlock || ownerDeadline.map({ ContinuousClock.now >= $0 }) == true {
                _ = handler(.tick)
            }
        }
        // `close` shuts the socket down, so the reader may see that as end of
        // stream (or a failed read) before it sees the request: say who ended it.
        if end != .stoppedByHandler, state.withLock({ $0.stopRequested }) { end = .closedByOwner }
        finish(end)
        state.withLock { $0.readerThread = nil }
        // Jobs resumed by `.ended` (and any later ones) run elsewhere.
        executor.shutDown()
        // The reader's last act: closers waiting in `close` see end of file.
        Glibc.close(endedWriteFD)
    }
}
