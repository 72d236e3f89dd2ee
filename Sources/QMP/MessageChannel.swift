#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// What a ``MessageChannel``'s reader reports to its owner.
public enum ChannelInput: Sendable {
    case message(JSONObject)
    /// A message that did not decode. The peer is broken: `.closed` follows
    /// at once and nothing after the bad message is delivered.
    case decodingError(QMPDecodingError)
    /// A deadline may have passed: the reader's poll timed out or was
    /// woken, or the deadline it was given has passed while input kept
    /// arriving.
    case tick
    /// The stream ended; nothing more follows.
    case closed(reason: String)
}

/// The transport shared by QMP and the guest agent: newline-framed JSON
/// objects over a connected stream socket.
///
/// A dedicated reader thread blocks in `poll(2)` on the socket and a
/// self-pipe used for wake-ups; it decodes with ``QMPMessageDecoder`` and
/// hands every message to `handler` in order. Deadlines are the owner's:
/// `nextDeadline` is asked before each poll, and `.tick` follows a poll
/// that timed out or was woken, or any poll once that deadline has passed,
/// so a steady stream of input cannot hold a deadline off. A message that
/// does not decode ends the stream (`.decodingError`, then `.closed`), as in
/// qemu.qmp: a peer that sends one is broken, and waiting on it for replies
/// would only end in a misleading timeout. Writes happen on the caller's
/// thread under a lock.
///
/// The reader thread is also a task executor (``executor``): between polls
/// it runs the jobs of tasks that prefer it, so a reply resumes such a task
/// without a thread switch.
public final class MessageChannel: Sendable {
    public typealias Handler = @Sendable (ChannelInput) -> Void

    /// Runs preferring tasks on the reader thread; also holds the wake-up pipe.
    public let executor: ReaderThreadExecutor
    private let fd: Int32
    private let writeLock = Mutex<Bool>(false)  // true once closed for writing
    private let state = Mutex<ReaderState>(ReaderState())
    private let handler: Handler
    private let nextDeadline: @Sendable () -> ContinuousClock.Instant?
    private let decoderTemplate: QMPMessageDecoder

    struct ReaderState {
        var started = false
        var stopRequested = false
        /// fd is closed (by `finish`).
        var fdClosed = false
        /// `.closed` has been delivered.
        var finished = false
        /// The reader thread until someone joins or detaches it.
        var thread: pthread_t?
        /// The reader thread's identity, kept after `thread` is taken by a joiner.
        var readerThread: pthread_t?
    }

    /// Adopts `fd` (a connected stream socket); the channel closes it.
    public init(
        adopting fd: Int32,
        decoder: QMPMessageDecoder = QMPMessageDecoder(),
        nextDeadline: @escaping @Sendable () -> ContinuousClock.Instant? = { nil },
        handler: @escaping Handler
    ) throws(SystemCallError) {
        self.executor = try ReaderThreadExecutor()
        self.fd = fd
        self.handler = handler
        self.nextDeadline = nextDeadline
        self.decoderTemplate = decoder
    }

    deinit {
        // Only when the reader never ran: it holds the channel until `finish`.
        state.withLock { s in if !s.fdClosed { Glibc.close(fd) } }
    }

    /// Starts the reader thread (once).
    public func start() throws(SystemCallError) {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        // Converting a deeply nested jansson tree recurses, and preferring
        // tasks run here too: give it room.
        pthread_attr_setstacksize(&attributes, 16 << 20)
        // Created under the lock, so the thread's identity is stored before
        // anything (the thread's own first step, a close) can ask for it.
        let result: Int32? = state.withLock { s in
            guard !s.started, !s.stopRequested else { return nil }
            s.started = true
            let box = Unmanaged.passRetained(self).toOpaque()
            var thread = pthread_t()
            let result = pthread_create(&thread, &attributes, { raw in
                let channel = Unmanaged<MessageChannel>.fromOpaque(raw!).takeRetainedValue()
                channel.readLoop()
                return nil
            }, box)
            if result == 0 {
                s.thread = thread
                s.readerThread = thread
            } else {
                Unmanaged<MessageChannel>.fromOpaque(box).release()
            }
            return result
        }
        if let result, result != 0 { throw SystemCallError("pthread_create", errno: result) }
    }

    /// Sends one message: its compact serialisation and a line end.
    public func send(_ message: JSONObject) throws(QMPError) {
        var bytes: [UInt8]
        do {
            bytes = try JSONValue.object(message).serialized()
        } catch {
            throw QMPError.encoding(error.description)
        }
        bytes.append(0x0A)
        try sendRaw(bytes)
    }

    /// Sends bytes as they are (a fault-injection and guest-agent sync hook).
    public func sendRaw(_ bytes: [UInt8]) throws(QMPError) {
        let result = bytes.withUnsafeBytes { raw in Result { () throws(QMPError) in try sendRaw(raw) } }
        try result.get()
    }

    /// Sends bytes as they are with `send(2)`, all of them or an error.
    public func sendRaw(_ bytes: UnsafeRawBufferPointer) throws(QMPError) {
        let failure: SystemCallError? = writeLock.withLock { closed -> SystemCallError? in
            if closed { return SystemCallError("send", errno: EPIPE) }
            do throws(SystemCallError) { try FileIO.writeAll(fd, bytes) } catch { return error }
            return nil
        }
        if let failure { throw QMPError.disconnected("could not send to QEMU: \(failure)") }
    }

    /// Wakes the reader so it re-reads `nextDeadline`.
    public func wake() {
        executor.wake()
    }

    /// Shuts the socket down; the handler's `.closed` has been delivered
    /// when this returns. Off the reader thread it also waits for the
    /// reader to end; on it (a preferring task closing), the reader ends
    /// as soon as the current job returns.
    public func close() {
        // Under the lock that `finish` holds when it closes fd, so the
        // shutdown never hits a closed (or reused) descriptor.
        let (thread, onReader): (pthread_t?, Bool) = state.withLock { s in
            s.stopRequested = true
            if !s.fdClosed { shutdown(fd, Int32(SHUT_RDWR)) }
            let onReader = s.readerThread.map { pthread_equal($0, pthread_self()) != 0 } ?? false
            defer { s.thread = nil }
            return (s.thread, onReader)
        }
        executor.wake()
        if onReader {
            if let thread { pthread_detach(thread) }
            finish(reason: "the connection was closed by qlab")
        } else if let thread {
            pthread_join(thread, nil)
        } else if state.withLock({ $0.started }) {
            // Another caller is joining (or the reader closed itself): it
            // cannot be joined twice; wait until it has delivered `.closed`.
            while !state.withLock({ $0.finished }) { usleep(200) }
        } else {
            finish(reason: "the connection was closed by qlab")
        }
    }

    /// Ends the stream once: no more writes, fd closed, `.closed` delivered.
    private func finish(reason: String) {
        writeLock.withLock { $0 = true }  // no write is in progress after this
        let first = state.withLock { s -> Bool in
            guard !s.fdClosed else { return false }
            s.fdClosed = true
            Glibc.close(fd)
            return true
        }
        guard first else { return }
        handler(.closed(reason: reason))
        // Set after the handler: a closer waiting for `finished` may rely on `.closed`.
        state.withLock { $0.finished = true }
    }

    private func readLoop() {
        executor.open()
        var decoder = decoderTemplate
        let capacity = 256 << 10
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        let fds = UnsafeMutablePointer<pollfd>.allocate(capacity: 2)
        var spareJobs: [UnownedJob] = []
        defer {
            buffer.deallocate()
            fds.deallocate()
        }
        var reason = "QEMU closed the connection"
        loop: while true {
            executor.runJobs(spare: &spareJobs)
            if state.withLock({ $0.stopRequested }) {
                reason = "the connection was closed by qlab"
                break
            }
            fds[0] = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            fds[1] = pollfd(fd: executor.wakeReadFD, events: Int16(POLLIN), revents: 0)
            var timeout: Int32 = -1
            let deadline = nextDeadline()
            if let deadline {
                let remaining = ContinuousClock.now.duration(to: deadline)
                let ms = remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000
                timeout = Int32(clamping: max(0, ms + 1))
            }
            let mayBlock = executor.prepareToSleep()
            let ready = poll(fds, 2, mayBlock ? timeout : 0)
            let pollErrno = errno
            let woken = fds[1].revents != 0
            executor.awoke(pipeReadable: woken)
            if ready < 0 && pollErrno != EINTR {
                reason = "poll failed: \(SystemCallError("poll", errno: pollErrno))"
                break
            }
            if ready > 0 && fds[0].revents != 0 {
                let n: Int
                do {
                    n = try FileIO.readSome(fd, into: buffer)
                } catch {
                    reason = "reading from QEMU failed: \(error)"
                    break
                }
                if n == 0 {
                    if let error = decoder.finish() {
                        handler(.decodingError(error))
                        reason = "QEMU closed the connection in the middle of a message"
                    }
                    break loop
                }
                decoder.append(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                while let result = decoder.next() {
                    switch result {
                    case .success(let message): handler(.message(message))
                    case .failure(let error):
                        handler(.decodingError(error))
                        reason = "received a malformed message: \(error)"
                        break loop
                    }
                }
            }
            // Deadlines matter only when poll timed out or was woken for
            // them, or when input kept poll from timing out past the
            // deadline; skipping the check after a timely reply keeps that
            // path short.
            if ready == 0 || woken || !mayBlock || deadline.map({ ContinuousClock.now >= $0 }) == true {
                handler(.tick)
            }
        }
        finish(reason: reason)
        // Jobs resumed by `.closed` (and any later ones) run elsewhere.
        executor.shutDown()
    }
}
