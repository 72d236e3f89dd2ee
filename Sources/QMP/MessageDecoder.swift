import Platform

/// Why a received message could not be delivered.
public enum QMPDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The line is not JSON: garbage, invalid UTF-8, a NUL byte, nesting
    /// deeper than jansson allows (`JSONParseError.kind` says which).
    case invalidJSON(JSONParseError, excerpt: String)
    /// Valid JSON, but QMP messages are objects.
    case notAnObject(excerpt: String)
    /// No line end within `limit` bytes; bytes up to the next line end are dropped.
    case messageTooLarge(limit: Int)
    /// The stream ended inside a message.
    case truncated(byteCount: Int)

    public var description: String {
        switch self {
        case .invalidJSON(let error, let excerpt): return "invalid JSON (\(error)): \(excerpt)"
        case .notAnObject(let excerpt): return "QMP message is not a JSON object: \(excerpt)"
        case .messageTooLarge(let limit): return "QMP message longer than \(limit) bytes"
        case .truncated(let count): return "stream ended inside a message (\(count) bytes received)"
        }
    }
}

/// A streaming decoder for QMP's framing: one JSON object per line.
///
/// QEMU ends each message with CRLF and escapes newlines inside strings, so
/// a line end always ends a message (qemu.qmp reads lines the same way). Any
/// split of the byte stream into ``append(_:)`` calls yields the same
/// messages. A bad line yields one error and decoding resumes at the next
/// line, so the stream's state stays defined.
///
/// The guest agent prefixes a `guest-sync-delimited` reply with a 0xFF byte
/// to flush partial input; with `resetByte` set, that byte discards
/// everything buffered before it, and a bad line before the first reset
/// byte is dropped without an error: it is what an earlier client left
/// half-read, which the protocol says to discard.
public struct QMPMessageDecoder: Sendable {
    public let maximumMessageSize: Int
    public let resetByte: UInt8?
    private var buffer: [UInt8] = []
    /// Bytes in `buffer` before this index were already consumed.
    private var start = 0
    /// Bytes before this index hold no line end (no need to search again).
    private var scanned = 0
    /// Set after an oversized message: drop input up to the next line end.
    private var discarding = false
    /// A reset byte has arrived (only meaningful with `resetByte`).
    private var sawResetByte = false

    public init(maximumMessageSize: Int = 64 << 20, resetByte: UInt8? = nil) {
        self.maximumMessageSize = maximumMessageSize
        self.resetByte = resetByte
    }

    /// True when a partial message is buffered.
    public var hasPartialMessage: Bool {
        buffer[start...].contains { !Self.isWhitespace($0) }
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        if let resetByte, let position = bytes.lastIndex(of: resetByte) {
            buffer.removeAll(keepingCapacity: true)
            start = 0
            scanned = 0
            discarding = false
            sawResetByte = true
            buffer.append(contentsOf: bytes[(position + 1)...])
            return
        }
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            scanned -= start
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// The next complete message, an error for a bad one, or nil when more bytes are needed.
    public mutating func next() -> Result<JSONObject, QMPDecodingError>? {
        while true {
            guard let lineEnd = findLineEnd() else {
                if buffer.count - start > maximumMessageSize && !discarding {
                    discarding = true
                    start = buffer.count
                    scanned = buffer.count
                    return .failure(.messageTooLarge(limit: maximumMessageSize))
                }
                if discarding {
                    start = buffer.count
                    scanned = buffer.count
                }
                return nil
            }
            let lineStart = start
            start = lineEnd + 1
            scanned = start
            if discarding {
                discarding = false
                continue
            }
            if lineEnd - lineStart > maximumMessageSize {
                return .failure(.messageTooLarge(limit: maximumMessageSize))
            }
            var end = lineEnd
            var begin = lineStart
            while end > begin && Self.isWhitespace(buffer[end - 1]) { end -= 1 }
            while begin < end && Self.isWhitespace(buffer[begin]) { begin += 1 }
            if begin == end { continue }
            let result = buffer.withUnsafeBytes { raw in
                Self.decodeLine(UnsafeRawBufferPointer(rebasing: raw[begin..<end]))
            }
            if case .failure = result, resetByte != nil, !sawResetByte { continue }
            return result
        }
    }

    /// Call at end of stream: an error when the stream stopped inside a message.
    public func finish() -> QMPDecodingError? {
        let leftover = buffer[start...].filter { !Self.isWhitespace($0) }.count
        return leftover > 0 && !discarding ? .truncated(byteCount: buffer.count - start) : nil
    }

    private mutating func findLineEnd() -> Int? {
        let count = buffer.count
        guard scanned < count else { return nil }
        let found: Int? = buffer.withUnsafeBytes { raw in
            ByteSearch.firstIndex(of: 0x0A, in: UnsafeRawBufferPointer(rebasing: raw[scanned...])).map { scanned + $0 }
        }
        if found == nil { scanned = count }
        return found
    }

    static func decodeLine(_ line: UnsafeRawBufferPointer) -> Result<JSONObject, QMPDecodingError> {
        switch JSONValue.parseBuffer(line) {
        case .success(.object(let object)):
            return .success(object)
        case .success:
            return .failure(.notAnObject(excerpt: excerpt(line)))
        case .failure(let error):
            return .failure(.invalidJSON(error, excerpt: excerpt(line)))
        }
    }

    /// At most `limit` bytes of `line`, printable ASCII as it is, every
    /// other byte as `\xNN` and a backslash as `\\`: safe on any terminal.
    static func excerpt(_ line: UnsafeRawBufferPointer, limit: Int = 120) -> String {
        let prefix = line.prefix(limit)
        var text = ""
        for byte in prefix {
            if byte == 0x5C {
                text += "\\\\"
            } else if byte >= 0x20 && byte < 0x7F {
                text.unicodeScalars.append(UnicodeScalar(byte))
            } else {
                text += byte < 0x10 ? "\\x0" : "\\x"
                text += String(byte, radix: 16)
            }
        }
        return line.count > limit ? text + "..." : text
    }

    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09
    }
}
