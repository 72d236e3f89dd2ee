#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// What a ``MessageChannel``'s reader reports to its owner.
public enum ChannelInput: Sendable {
    case message(JSONObject)
    case decodingError(QMPDecodingError)
    /// The reader woke up (a deadline may have passed).
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
/// `nextDeadline` is asked before each poll, and `.tick` follows each wake.
/// Writes happen on the caller's thread under a lock.
public final class MessageChannel: Sendable {
    public typealias Handler = @Sendable (ChannelInput) -> Void

    private let fd: Int32
    private let wakeFD: Int32
    private let wakeWriteFD: Int32
    private let writeLock = Mutex<Bool>(false)  // true once closed for writing
    private let state = Mutex<ReaderState>(ReaderState())
    private let handler: Handler
    private let nextDeadline: @Sendable () -> ContinuousClock.Instant?
    private let decoderTemplate: QMPMessageDecoder

    struct ReaderState {
        var started = false
        var stopRequested = false
        var finished = false
        var thread: pthread_t?
    }

    /// Adopts `fd` (a connected stream socket); the channel closes it.
    public init(
        adopting fd: Int32,
        decoder: QMPMessageDecoder = QMPMessageDecoder(),
        nextDeadline: @escaping @Sendable () -> ContinuousClock.Instant? = { nil },
        handler: @escaping Handler
    ) throws(SystemCallError) {
        // A self-pipe wakes the reader's poll(2).
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw SystemCallError("pipe") }
        for end in ends {
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
        }
        self.fd = fd
        self.wakeFD = ends[0]
        self.wakeWriteFD = ends[1]
        self.handler = handler
        self.nextDeadline = nextDeadline
        self.decoderTemplate = decoder
    }

    deinit {
        Glibc.close(wakeFD)
        Glibc.close(wakeWriteFD)
    }

    /// Starts the reader thread (once).
    public func start() throws(SystemCallError) {
        let alreadyStarted = state.withLock { s in
            defer { s.started = true }
            return s.started
        }
        guard !alreadyStarted else { return }
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        // Converting a deeply nested jansson tree recurses; give it room.
        pthread_attr_setstacksize(&attributes, 16 << 20)
        let box = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, &attributes, { raw in
            let channel = Unmanaged<MessageChannel>.fromOpaque(raw!).takeRetainedValue()
            channel.readLoop()
            return nil
        }, box)
        guard result == 0 else {
            Unmanaged<MessageChannel>.fromOpaque(box).release()
            throw SystemCallError("pthread_create", errno: result)
        }
        state.withLock { $0.thread = thread }
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
        let failure: SystemCallError? = writeLock.withLock { closed -> SystemCallError? in
            if closed { return SystemCallError("send", errno: EPIPE) }
            return bytes.withUnsafeBytes { raw -> SystemCallError? in
                do { try FileIO.writeAll(fd, raw) } catch { return (error as? SystemCallError) ?? SystemCallError("send") }
                return nil
            }
        }
        if let failure { throw QMPError.disconnected("could not send to QEMU: \(failure)") }
    }

    /// Wakes the reader so it re-reads `nextDeadline`.
    public func wake() {
        var one: UInt8 = 1
        _ = write(wakeWriteFD, &one, 1)
    }

    /// Shuts the socket down and waits for the reader to finish; the
    /// handler's `.closed` has been delivered when this returns.
    public func close() {
        // Under the lock that the reader holds when it closes fd, so the
        // shutdown never hits a closed (or reused) descriptor.
        let thread: pthread_t? = state.withLock { s in
            s.stopRequested = true
            if !s.finished { shutdown(fd, Int32(SHUT_RDWR)) }
            return s.thread
        }
        wake()
        if let thread, pthread_self() != thread {
            pthread_join(thread, nil)
            state.withLock { $0.thread = nil }
        }
    }

    private func readLoop() {
        var decoder = decoderTemplate
        let capacity = 256 << 10
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        defer { buffer.deallocate() }
        var reason = "QEMU closed the connection"
        loop: while true {
            if state.withLock({ $0.stopRequested }) {
                reason = "the connection was closed by qlab"
                break
            }
            var fds = [
                pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
            ]
            var timeout: Int32 = -1
            if let deadline = nextDeadline() {
                let remaining = ContinuousClock.now.duration(to: deadline)
                let ms = remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000
                timeout = Int32(clamping: max(0, ms + 1))
            }
            let ready = poll(&fds, 2, timeout)
            if ready < 0 && errno != EINTR {
                reason = "poll failed: \(SystemCallError("poll"))"
                break
            }
            if fds[1].revents != 0 {
                var drain = [UInt8](repeating: 0, count: 64)
                _ = read(wakeFD, &drain, 64)
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
                    case .failure(let error): handler(.decodingError(error))
                    }
                }
            }
            handler(.tick)
        }
        writeLock.withLock { $0 = true }
        state.withLock { s in
            s.finished = true
            Glibc.close(fd)
        }
        handler(.closed(reason: reason))
    }
}
