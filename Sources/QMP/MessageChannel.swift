import Platform
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
/// objects over a ``ByteStreamChannel``.
///
/// The stream's reader thread decodes with ``QMPMessageDecoder`` and hands
/// every message to the handler in order; deadlines work as in
/// ``ByteStreamChannel``. A message that does not decode ends the stream
/// (`.decodingError`, then `.closed`), as in qemu.qmp: a peer that sends one
/// is broken, and waiting on it for replies would only end in a misleading
/// timeout.
public final class MessageChannel: Sendable {
    public typealias Handler = @Sendable (ChannelInput) -> Void

    /// The byte stream underneath: its reader thread, executor and writes.
    public let stream: ByteStreamChannel
    private let decoder: FrameDecoder

    /// Runs preferring tasks on the reader thread.
    public var executor: ReaderThreadExecutor { stream.executor }

    /// The decoder's state: touched only by the reader thread, kept behind a
    /// lock so the handler closure can own it without unchecked sendability.
    final class FrameDecoder: Sendable {
        struct State {
            var decoder: QMPMessageDecoder
            /// Why the reader was stopped (a malformed message).
            var stopReason: String?
        }
        let state: Mutex<State>
        init(_ decoder: QMPMessageDecoder) { state = Mutex(State(decoder: decoder)) }
    }

    /// Adopts `fd` (a connected stream socket); the channel closes it.
    public init(adopting fd: Int32, decoder: QMPMessageDecoder = QMPMessageDecoder()) throws(SystemCallError) {
        self.stream = try ByteStreamChannel(adopting: fd)
        self.decoder = FrameDecoder(decoder)
    }

    /// Starts the reader thread (once).
    public func start(
        nextDeadline: @escaping @Sendable () -> ContinuousClock.Instant? = { nil },
        handler: @escaping Handler
    ) throws(SystemCallError) {
        let decoder = self.decoder
        try stream.start(nextDeadline: nextDeadline) { input in
            switch input {
            case .bytes(let bytes):
                decoder.state.withLock { $0.decoder.append(bytes) }
                while let result = decoder.state.withLock({ $0.decoder.next() }) {
                    switch result {
                    case .success(let message): handler(.message(message))
                    case .failure(let error):
                        handler(.decodingError(error))
                        decoder.state.withLock { $0.stopReason = "received a malformed message: \(error)" }
                        return false
                    }
                }
                return true
            case .tick:
                handler(.tick)
                return true
            case .ended(let end):
                let (truncated, stopReason) = decoder.state.withLock { s in
                    (end == .peerClosed ? s.decoder.finish() : nil, s.stopReason)
                }
                if let truncated { handler(.decodingError(truncated)) }
                let reason: String
                switch end {
                case .peerClosed: reason = truncated == nil ? "QEMU closed the connection" : "QEMU closed the connection in the middle of a message"
                case .closedByOwner: reason = "the connection was closed by qlab"
                case .stoppedByHandler: reason = stopReason ?? "received a malformed message"
                case .readFailed(let error): reason = "reading from QEMU failed: \(error)"
                case .pollFailed(let error): reason = "poll failed: \(error)"
                }
                handler(.closed(reason: reason))
                return false
            }
        }
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

    /// Sends bytes as they are, all of them or an error.
    public func sendRaw(_ bytes: UnsafeRawBufferPointer) throws(QMPError) {
        do {
            try stream.write(bytes)
        } catch {
            let failure: SystemCallError
            switch error {
            case .failed(let error): failure = error
            case .closed, .stalled: failure = SystemCallError("send", Errno.brokenPipe)
            }
            throw QMPError.disconnected("could not send to QEMU: \(failure)")
        }
    }

    /// Wakes the reader so it re-reads `nextDeadline`.
    public func wake() {
        stream.wake()
    }

    /// Shuts the socket down; the handler's `.closed` has been delivered
    /// when this returns (see ``ByteStreamChannel/close()``).
    public func close() {
        stream.close()
    }
}
