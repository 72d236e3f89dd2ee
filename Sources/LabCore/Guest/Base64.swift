/// Base64 (RFC 4648, standard alphabet), as the QEMU guest agent uses for
/// `out-data`, `err-data` and `input-data`. jansson does none.
public enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static let table: [Int8] = {
        var table = [Int8](repeating: -1, count: 256)
        for (index, byte) in alphabet.enumerated() { table[Int(byte)] = Int8(index) }
        return table
    }()

    /// Decodes `text`; whitespace is skipped, `=` padding is optional. Nil
    /// for any other character, for padding in the middle, or for a lone
    /// final character (6 bits make no byte).
    public static func decode(_ text: String) -> [UInt8]? {
        var result: [UInt8] = []
        result.reserveCapacity(text.utf8.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        var count = 0
        var padding = 0
        for byte in text.utf8 {
            switch byte {
            case 0x20, 0x09, 0x0A, 0x0D:
                continue
            case UInt8(ascii: "="):
                padding += 1
                if padding > 2 { return nil }
                continue
            default:
                if padding > 0 { return nil }
                let value = table[Int(byte)]
                if value < 0 { return nil }
                accumulator = (accumulator << 6) | UInt32(value)
                bits += 6
                count += 1
                if bits >= 8 {
                    bits -= 8
                    result.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                    accumulator &= (1 << UInt32(bits)) - 1
                }
            }
        }
        if count % 4 == 1 { return nil }
        if padding > 0 && (count + padding) % 4 != 0 { return nil }
        return result
    }

    /// Encodes `bytes` with `=` padding.
    public static func encode<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
        var output: [UInt8] = []
        output.reserveCapacity((bytes.count + 2) / 3 * 4)
        var iterator = bytes.makeIterator()
        while let a = iterator.next() {
            let b = iterator.next()
            let c = iterator.next()
            let triple = UInt32(a) << 16 | UInt32(b ?? 0) << 8 | UInt32(c ?? 0)
            output.append(alphabet[Int(triple >> 18 & 63)])
            output.append(alphabet[Int(triple >> 12 & 63)])
            output.append(b == nil ? UInt8(ascii: "=") : alphabet[Int(triple >> 6 & 63)])
            output.append(c == nil ? UInt8(ascii: "=") : alphabet[Int(triple & 63)])
        }
        return String(decoding: output, as: UTF8.self)
    }
}
