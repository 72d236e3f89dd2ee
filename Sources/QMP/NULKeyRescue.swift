/// Carries object keys with an escaped NUL (`{"foo\u0000bar": 42}`, valid
/// JSON) through jansson, which refuses them even with `JSON_ALLOW_NUL`
/// ("NUL byte in object key not supported", jansson 2.14 `parse_object`)
/// although it takes NULs in string values. Each such key is swapped for a
/// token string before `json_loadb` and back when the tree is converted; the
/// key keeps its NUL (a Swift `String` holds U+0000). Serialising needs no
/// help: `json_object_setn_new_nocheck` takes a key with its length and
/// `json_dumpb` escapes the NUL again.
///
/// The token holds a random per-process nonce (as ``BigIntegerRescue``'s), so
/// a key QEMU sends cannot collide with it by accident.
enum NULKeyRescue {
    struct Found {
        /// The key's string literal, quotes included.
        var range: Range<Int>
        var key: String
    }

    static let nonce: String = {
        var generator = SystemRandomNumberGenerator()
        let a = generator.next() as UInt64
        let b = generator.next() as UInt64
        return "\u{1}qlab-key-" + String(a, radix: 36) + String(b, radix: 36) + ":"
    }()

    static func token(_ index: Int) -> String { nonce + String(index) }

    static func index(ofToken string: String) -> Int? {
        guard string.hasPrefix(nonce) else { return nil }
        return Int(string.dropFirst(nonce.count))
    }

    /// String literals that hold a `\u0000` escape and are followed by `:`
    /// (object keys), with their decoded text. A literal jansson cannot
    /// decode is left alone: jansson then reports it where it is.
    static func scan(_ buffer: UnsafeRawBufferPointer) -> [Found] {
        var found: [Found] = []
        var index = 0
        let count = buffer.count
        while index < count {
            guard buffer[index] == UInt8(ascii: "\"") else {
                index += 1
                continue
            }
            let start = index
            var hasNUL = false
            index += 1
            while index < count, buffer[index] != UInt8(ascii: "\"") {
                if buffer[index] == UInt8(ascii: "\\") {
                    if index + 5 < count, buffer[index + 1] == UInt8(ascii: "u"),
                        buffer[(index + 2)...(index + 5)].allSatisfy({ $0 == UInt8(ascii: "0") })
                    {
                        hasNUL = true
                    }
                    index += 2
                } else {
                    index += 1
                }
            }
            guard index < count else { break }  // unterminated: jansson says so
            index += 1
            let end = index
            guard hasNUL else { continue }
            var next = end
            while next < count, [0x20, 0x09, 0x0A, 0x0D].contains(buffer[next]) { next += 1 }
            guard next < count, buffer[next] == UInt8(ascii: ":") else { continue }
            let literal = UnsafeRawBufferPointer(rebasing: buffer[start..<end])
            if case .success(.string(let key)) = JSONValue.loadWithJansson(literal, rescued: JSONValue.Rescued()) {
                found.append(Found(range: start..<end, key: key))
            }
        }
        return found
    }

    static func rewrite(_ buffer: UnsafeRawBufferPointer, replacing found: [Found]) -> [UInt8] {
        BigIntegerRescue.rewrite(buffer, replacing: found.map(\.range), token: token)
    }
}
