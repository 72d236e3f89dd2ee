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
    private let fd: FileDescriptor
    private let writeLock = Mutex<Bool>(false)  // true once closed for writing
    private let state = Mutex<State>(State())
    /// Readable (end of file) once the reader has ended: closers poll it.
    private let endedReadFD: FileDescriptor
    private let endedWriteFD: FileDescriptor

    struct State {
        var started = false
        var stopRequested = false
        /// fd is closed (by `finish`).
        var fdClosed = false
        var handler: Handler?
        var nextDeadline: (@Sendable () -> ContinuousClock.Instant?)?
        /// The reader thread's identity, while it runs.
        var readerThread: ThreadIdentity?
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
        let ends = try FileDescriptor.pipeCloseOnExec()
        do {
            self.executor = try ReaderThreadExecutor()
        } catch {
            ends.readEnd.closeIgnoringErrors()
            ends.writeEnd.closeIgnoringErrors()
            throw error
        }
        self.fd = FileDescriptor(rawValue: fd)
        self.endedReadFD = ends.readEnd
        self.endedWriteFD = ends.writeEnd
    }

    deinit {
        // The reader holds the channel until it ends, so it is not running here.
        let (closeFD, started) = state.withLock { s in (!s.fdClosed, s.started) }
        if closeFD { fd.closeIgnoringErrors() }
        if !started { endedWriteFD.closeIgnoringErrors() }
        endedReadFD.closeIgnoringErrors()
    }

    /// Starts the reader thread (once), detached (``DetachedThread``).
    public func start(
        nextDeadline: @escaping @Sendable () -> ContinuousClock.Instant? = { nil },
        handler: @escaping Handler
    ) throws(SystemCallError) {
        // Created under the lock, so the thread's identity is stored before
        // anything (the thread's own first step, a close) can ask for it.
        // The thread holds the channel until its loop ends.
        let failure: SystemCallError? = state.withLock { s in
            guard !s.started, !s.stopRequested else { return nil }
            s.handler = handler
            s.nextDeadline = nextDeadline
            do throws(SystemCallError) {
                // Converting a deeply nested jansson tree recurses, and
                // preferring tasks run here too: give it room.
                s.readerThread = try DetachedThread.start(stackSize: 16 << 20) { [self] in readLoop() }
                s.started = true
                return nil
            } catch {
                s.handler = nil
                return error
            }
        }
        if let failure { throw failure }
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
                switch fd.send(UnsafeRawBufferPointer(rebasing: bytes[offset...])) {
                case .success(let n):
                    offset += n
                    continue
                case .failure(let error) where error.isWouldBlock:
                    break
                case .failure(let error):
                    return .failed(SystemCallError("send", error))
                }
                var milliseconds: Int32 = -1
                if let deadline {
                    let remaining = ContinuousClock.now.duration(to: deadline)
                    guard remaining > .zero else { return .stalled }
                    milliseconds = Self.milliseconds(remaining)
                }
                var poller = PollSet([(fd, .writable)])
                _ = poller.waitOnce(milliseconds: milliseconds)
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
                    switch fd.send(UnsafeRawBufferPointer(rebasing: raw[offset...]), dontWait: true) {
                    case .success(let n): return .success(n)
                    case .failure(let error) where error.isWouldBlock: return .success(0)
                    case .failure(let error): return .failure(.failed(SystemCallError("send", error)))
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
            if !s.fdClosed { fd.shutdownReadWrite() }
            return (s.started, s.readerThread?.isCurrent == true)
        }
        executor.wake()
        guard started, !onReader else {
            finish(.closedByOwner)
            return
        }
        var ended = PollSet([(endedReadFD, .readable)])
        _ = ended.wait(until: nil)
    }

    /// Ends the stream once: no more writes, fd closed, `.ended` delivered.
    private func finish(_ end: StreamEnd) {
        writeLock.withLock { $0 = true }  // no write is in progress after this
        let handler: Handler?? = state.withLock { s in
            guard !s.fdClosed else { return .none }
            s.fdClosed = true
            fd.closeIgnoringErrors()
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
        var fds = PollSet([(fd, .readable), (executor.wakeReadFD, .readable)])
        var spareJobs: [UnownedJob] = []
        defer { buffer.deallocate() }
        var end = StreamEnd.peerClosed
        readLoop: while true {
            executor.runJobs(spare: &spareJobs)
            if state.withLock({ $0.stopRequested }) {
                end = .closedByOwner
                break
            }
            let writerDeadline = state.withLock { s in s.writers.isEmpty ? nil : s.writers.values.map(\.deadline).min() }
            fds.set(0, fd, writerDeadline == nil ? .readable : [.readable, .writable])
            fds.set(1, executor.wakeReadFD, .readable)
            let ownerDeadline = nextDeadline()
            let deadline = [ownerDeadline, writerDeadline].compactMap { $0 }.min()
            let timeout = deadline.map { Self.milliseconds(ContinuousClock.now.duration(to: $0)) } ?? -1
            let mayBlock = executor.prepareToSleep()
            let polled = fds.waitOnce(milliseconds: mayBlock ? timeout : 0)
            let woken = !fds.returned(1).isEmpty
            executor.awoke(pipeReadable: woken)
            // An interrupted poll is a turn with nothing ready (deadlines are recomputed).
            if case .failure(let error) = polled, error != .interrupted {
                end = .pollFailed(SystemCallError("poll", error))
                break
            }
            let ready = (try? polled.get()) ?? 0
            if writerDeadline != nil {
                releaseWriters(all: !fds.returned(0).isDisjoint(with: [.writable, .error, .hangUp]))
            }
            if ready > 0 && !fds.returned(0).isDisjoint(with: [.readable, .error, .hangUp]) {
                switch fd.readSome(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<capacity])) {
                case .success(0):
                    break readLoop
                case .success(let n):
                    if !handler(.bytes(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))) {
                        end = .stoppedByHandler
                        break readLoop
                    }
                case .failure(let error) where error.isWouldBlock:
                    break
                case .failure(let error):
                    end = .readFailed(SystemCallError("read", error))
                    break readLoop
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
        endedWriteFD.closeIgnoringErrors()
    }
}
