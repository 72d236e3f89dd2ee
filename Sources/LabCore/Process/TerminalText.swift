/// Text from outside qlab (QEMU's output, a guest's console, a QMP error,
/// a guest command's output) made safe to print to a terminal.
///
/// A terminal obeys control characters and escape sequences in what it is
/// given: a hostile guest could clear the screen, move the cursor to
/// rewrite earlier lines, set the window title or, on some terminals, make
/// it answer with input. ``neutralised(_:keepingLines:)`` shows every such
/// character escaped instead, so the text reads as what was received:
///
/// - C0 controls and ESC as `\x1b` (so `ESC [ 2 J` prints as `\x1b[2J`),
///   with line feed and tab kept when `keepingLines` is set (a carriage
///   return is kept only before a line feed, and dropped there);
/// - DEL, the C1 controls U+0080...U+009F (a terminal may take U+009B as a
///   CSI) and the bidirectional formatting characters (they reorder what is
///   shown) as `\u009b`; inside a JSON string this is still valid JSON with
///   the same meaning, so neutralised JSON stays JSON;
/// - each byte of invalid UTF-8 as `\xff`.
///
/// Backslashes are left as they are: the aim is a terminal that cannot be
/// driven, not a reversible encoding.
public enum TerminalText {
    /// `text` with control characters and escape sequences shown escaped;
    /// `keepingLines` keeps line feeds and tabs (multi-line output),
    /// otherwise they are escaped too (one-line messages).
    public static func neutralised(_ text: String, keepingLines: Bool = true) -> String {
        if !needsEscaping(text.utf8, keepingLines: keepingLines) { return text }
        return neutralised(Array(text.utf8), keepingLines: keepingLines)
    }

    /// `bytes` (UTF-8 as far as it is valid) as text, neutralised as for strings.
    public static func neutralised(_ bytes: [UInt8], keepingLines: Bool = true) -> String {
        if !needsEscaping(bytes, keepingLines: keepingLines) { return String(decoding: bytes, as: UTF8.self) }
        var out = ""
        out.reserveCapacity(bytes.count + 16)
        var parser = Unicode.UTF8.ForwardParser()
        var iterator = bytes.makeIterator()
        var offset = 0
        var pendingCarriageReturn = false
        while true {
            let parsed = parser.parseScalar(from: &iterator)
            let scalar: Unicode.Scalar
            switch parsed {
            case .emptyInput:
                if pendingCarriageReturn { out += "\\r" }
                return out
            case .error(let length):
                if pendingCarriageReturn { out += "\\r" }
                pendingCarriageReturn = false
                for byte in bytes[offset..<(offset + length)] { out += hexByte(byte) }
                offset += length
                continue
            case .valid(let encoded):
                offset += encoded.count
                scalar = Unicode.UTF8.decode(encoded)
            }
            if pendingCarriageReturn {
                pendingCarriageReturn = false
                if scalar != "\n" { out += "\\r" }
            }
            switch scalar.value {
            case 0x0A where keepingLines, 0x09 where keepingLines:
                out.unicodeScalars.append(scalar)
            case 0x0D where keepingLines:
                pendingCarriageReturn = true
            case 0x0A: out += "\\n"
            case 0x09: out += "\\t"
            case 0x0D: out += "\\r"
            case 0x00..<0x20: out += hexByte(UInt8(scalar.value))
            case 0x7F...0x9F, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069:
                out += "\\u" + hex(scalar.value, digits: 4)
            default:
                out.unicodeScalars.append(scalar)
            }
        }
    }

    /// True when some byte may need escaping (any control byte, any
    /// non-ASCII byte: those are checked scalar by scalar).
    static func needsEscaping<Bytes: Sequence<UInt8>>(_ bytes: Bytes, keepingLines: Bool) -> Bool {
        bytes.contains { byte in
            if byte >= 0x20 && byte < 0x7F { return false }
            return !(keepingLines && (byte == 0x0A || byte == 0x09))
        }
    }

    static func hexByte(_ byte: UInt8) -> String { "\\x" + hex(UInt32(byte), digits: 2) }

    static func hex(_ value: UInt32, digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }
}
