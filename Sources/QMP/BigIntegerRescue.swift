
/// Carries integers that jansson's 64-bit signed `json_int_t` cannot hold
/// through jansson: each is swapped for a string token before `json_loadb`
/// (and after `json_dumpb`), and swapped back when the tree is converted.
///
/// The token holds a random per-process nonce, so a string QEMU sends cannot
/// collide with it by accident.
enum BigIntegerRescue {
    struct Found {
        var range: Range<Int>
        var value: JSONValue
    }

    static let nonce: String = {
        var generator = SystemRandomNumberGenerator()
        let a = generator.next() as UInt64
        let b = generator.next() as UInt64
        return "\u{1}qlab-int-" + String(a, radix: 36) + String(b, radix: 36) + ":"
    }()

    static func token(_ index: Int) -> String { nonce + String(index) }

    /// The token of a double when dumping: its bit pattern is the index-th value.
    static func doubleToken(_ index: Int) -> String { nonce + "d" + String(index) }

    static func index(ofToken string: String) -> Int? {
        guard string.hasPrefix(nonce) else { return nil }
        return Int(string.dropFirst(nonce.count))
    }

    /// Finds integer literals outside strings that do not fit Int64.
    /// Digits outside strings only ever belong to numbers in JSON.
    static func scan(_ buffer: UnsafeRawBufferPointer) -> [Found] {
        var found: [Found] = []
        var inString = false
        var escaped = false
        var index = 0
        let count = buffer.count
        while index < count {
            let byte = buffer[index]
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                index += 1
                continue
            }
            if byte == UInt8(ascii: "\"") {
                inString = true
                index += 1
                continue
            }
            guard byte == UInt8(ascii: "-") || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) else {
                index += 1
                continue
            }
            // A number token: [-0-9.eE+]*
            let start = index
            var isInteger = true
            while index < count {
                let b = buffer[index]
                if b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") || b == UInt8(ascii: "-") {
                    index += 1
                } else if b == UInt8(ascii: ".") || b == UInt8(ascii: "e") || b == UInt8(ascii: "E") || b == UInt8(ascii: "+") {
                    isInteger = false
                    index += 1
                } else {
                    break
                }
            }
            // Int64 has at most 19 digits; shorter literals always fit.
            let digitCount = index - start - (buffer[start] == UInt8(ascii: "-") ? 1 : 0)
            guard isInteger, digitCount >= 19 else { continue }
            let literal = String(decoding: UnsafeRawBufferPointer(rebasing: buffer[start..<index]), as: UTF8.self)
            if Int64(literal) != nil { continue }
            if let unsigned = UInt64(literal) {
                found.append(Found(range: start..<index, value: .uint(unsigned)))
            } else if let double = Double(literal), literal.dropFirst(literal.hasPrefix("-") ? 1 : 0).allSatisfy(\.isASCIIDigit) {
                found.append(Found(range: start..<index, value: .double(double)))
            }
        }
        return found
    }

    static func rewrite(_ buffer: UnsafeRawBufferPointer, replacing found: [Found]) -> [UInt8] {
        rewrite(buffer, replacing: found.map(\.range), token: token)
    }

    /// `buffer` with each of `ranges` (in order) replaced by the JSON string of
    /// `token(i)`, whose first character, U+0001, JSON requires escaped. Shared
    /// by both rescues (``NULKeyRescue`` too).
    static func rewrite(_ buffer: UnsafeRawBufferPointer, replacing ranges: [Range<Int>], token: (Int) -> String) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(buffer.count + ranges.count * 48)
        var cursor = 0
        for (index, range) in ranges.enumerated() {
            output.append(contentsOf: buffer[cursor..<range.lowerBound])
            output.append(UInt8(ascii: "\""))
            output.append(contentsOf: Array("\\u0001".utf8))
            output.append(contentsOf: Array(token(index).utf8.dropFirst()))
            output.append(UInt8(ascii: "\""))
            cursor = range.upperBound
        }
        output.append(contentsOf: buffer[cursor..<buffer.count])
        return output
    }

    /// Replaces `"\u0001qlab-int-...:N"` in dumped JSON with the N-th integer's
    /// digits, and `"...:dN"` with the double whose bit pattern is the N-th
    /// value, as Swift's shortest round-trip text (`0.123`, `2.0`, `1e-07`).
    /// One pass over the bytes: a report has thousands of doubles and tens of MiB
    /// (a pass per value made writing a large report take hours).
    static func substituteTokens(in bytes: [UInt8], with values: [UInt64]) -> [UInt8] {
        let prefix = Array(("\"\\u0001" + nonce.dropFirst()).utf8)
        let (quote, zero, nine, d) = (UInt8(ascii: "\""), UInt8(ascii: "0"), UInt8(ascii: "9"), UInt8(ascii: "d"))
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        let count = bytes.count
        var index = 0
        var copied = 0
        while index < count {
            guard bytes[index] == quote, count - index > prefix.count, bytes[index..<index + prefix.count].elementsEqual(prefix) else {
                index += 1
                continue
            }
            var cursor = index + prefix.count
            let isDouble = bytes[cursor] == d
            if isDouble { cursor += 1 }
            var number = 0
            var digits = 0
            while cursor < count, bytes[cursor] >= zero, bytes[cursor] <= nine, digits < 18 {
                number = number * 10 + Int(bytes[cursor] - zero)
                cursor += 1
                digits += 1
            }
            guard digits > 0, cursor < count, bytes[cursor] == quote, number < values.count else {
                index += 1
                continue
            }
            output.append(contentsOf: bytes[copied..<index])
            let value = values[number]
            output.append(contentsOf: (isDouble ? Double(bitPattern: value).description : String(value)).utf8)
            index = cursor + 1
            copied = index
        }
        output.append(contentsOf: bytes[copied..<count])
        return output
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}

extension String {
    /// Plain substring replacement without Foundation.
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var remainder = self[...]
        while let range = remainder.firstRange(of: target) {
            result += remainder[..<range.lowerBound]
            result += replacement
            remainder = remainder[range.upperBound...]
        }
        result += remainder
        return result
    }
}
