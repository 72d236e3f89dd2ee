import Platform

/// What a wait on the console looks for.
public enum ConsolePattern: Sendable, Hashable {
    /// The first of these texts to appear (byte-exact, UTF-8).
    case anyOf([String])
    /// A regular expression (Swift `Regex` syntax) over the text received,
    /// decoded as UTF-8; searched in at most the last 64 KiB.
    case regex(String)
    /// A marker printed by qlab's command wrapper, found even when a kernel
    /// message (`[  12.345678] text\r\n`) or a carriage return interrupts it.
    /// With `number`, a decimal number (the exit status) and a line end
    /// must follow; it is the match's `value`.
    case marker(String, number: Bool)

    public static func text(_ text: String) -> ConsolePattern { .anyOf([text]) }

    /// How far before new bytes a match may start that was not complete
    /// before: searching again from there finds everything.
    var overlap: Int {
        switch self {
        case .anyOf(let texts): return max(0, (texts.map(\.utf8.count).max() ?? 0) - 1)
        case .regex: return 64 << 10
        case .marker(let text, _): return text.utf8.count + 16 << 10
        }
    }

    public var summary: String {
        switch self {
        case .anyOf(let texts): return texts.map { "\"\($0)\"" }.joined(separator: " or ")
        case .regex(let pattern): return "text matching /\(pattern)/"
        case .marker(let text, _): return "marker \(text)"
        }
    }
}

/// Where a pattern matched, in offsets of the console stream.
public struct ConsoleMatch: Sendable, Hashable {
    public var start: Int
    public var end: Int
    /// Which of `anyOf`'s texts matched.
    public var alternative: Int
    /// The number after a `marker(_, number: true)`.
    public var value: Int?
}

enum ConsoleMatcher {
    /// The first match of `pattern` in `bytes[from...]`; offsets are indices of `bytes`.
    static func firstMatch(_ pattern: ConsolePattern, in bytes: UnsafeBufferPointer<UInt8>, from: Int) -> ConsoleMatch? {
        guard from <= bytes.count else { return nil }
        switch pattern {
        case .anyOf(let texts):
            var best: ConsoleMatch?
            for (index, text) in texts.enumerated() {
                let needle = Array(text.utf8)
                guard !needle.isEmpty, let start = find(needle, in: bytes, from: from, before: best?.start ?? bytes.count) else { continue }
                best = ConsoleMatch(start: start, end: start + needle.count, alternative: index)
            }
            return best
        case .regex(let source):
            guard let regex = try? Regex(source) else { return nil }
            let begin = max(from, bytes.count - (64 << 10))
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[begin...]), as: UTF8.self)
            guard let match = try? regex.firstMatch(in: text) else { return nil }
            // Offsets back in bytes (the text may hold replacement characters: count their UTF-8 the way they were).
            let prefix = text[..<match.range.lowerBound].utf8.count
            let length = text[match.range].utf8.count
            return ConsoleMatch(start: begin + prefix, end: min(bytes.count, begin + prefix + length), alternative: 0)
        case .marker(let text, let number):
            let needle = Array(text.utf8)
            guard let first = needle.first else { return nil }
            var position = from
            while position < bytes.count {
                guard let candidate = find([first], in: bytes, from: position, before: bytes.count) else { return nil }
                if let match = markerMatch(needle, number: number, in: bytes, at: candidate) { return match }
                position = candidate + 1
            }
            return nil
        }
    }

    /// `needle` in `bytes[from..<before]` (a match may end after `before`):
    /// `memchr(3)` for its first byte, `memcmp(3)` for the rest.
    static func find(_ needle: [UInt8], in bytes: UnsafeBufferPointer<UInt8>, from: Int, before: Int) -> Int? {
        guard bytes.baseAddress != nil, from >= 0, let first = needle.first else { return nil }
        let lastStart = min(bytes.count - needle.count, before - 1)
        let haystack = UnsafeRawBufferPointer(bytes)
        var position = from
        return needle.withUnsafeBytes { raw -> Int? in
            while position <= lastStart {
                guard let offset = ByteSearch.firstIndex(of: first, in: UnsafeRawBufferPointer(rebasing: haystack[position...lastStart])) else { return nil }
                let index = position + offset
                if ByteSearch.matches(raw, in: haystack, at: index) { return index }
                position = index + 1
            }
            return nil
        }
    }

    /// `needle` at `start`, allowing carriage returns and whole kernel log
    /// lines between any two of its bytes; then, with `number`, digits and a line end.
    static func markerMatch(_ needle: [UInt8], number: Bool, in bytes: UnsafeBufferPointer<UInt8>, at start: Int) -> ConsoleMatch? {
        var i = start
        var k = 0
        func skipNoise() {
            while i < bytes.count {
                if bytes[i] == 0x0D { i += 1; continue }
                if bytes[i] == UInt8(ascii: "["), let next = kernelLineEnd(in: bytes, at: i) { i = next; continue }
                return
            }
        }
        while k < needle.count {
            if k > 0 { skipNoise() }
            guard i < bytes.count, bytes[i] == needle[k] else { return nil }
            i += 1
            k += 1
        }
        guard number else { return ConsoleMatch(start: start, end: i, alternative: 0) }
        var value = 0
        var digits = 0
        var negative = false
        while true {
            skipNoise()
            guard i < bytes.count else { return nil }  // incomplete: wait for more
            let byte = bytes[i]
            if byte == UInt8(ascii: "-") && digits == 0 && !negative {
                negative = true
            } else if byte >= 0x30 && byte <= 0x39 {
                value = value &* 10 &+ Int(byte - 0x30)
                digits += 1
                if digits > 9 { return nil }
            } else if byte == 0x0A {
                guard digits > 0 else { return nil }
                return ConsoleMatch(start: start, end: i + 1, alternative: 0, value: negative ? -value : value)
            } else {
                return nil
            }
            i += 1
        }
    }

    /// The index after a complete kernel log line starting at `i`
    /// (`[ seconds.micros] text` and its line end), else nil.
    static func kernelLineEnd(in bytes: UnsafeBufferPointer<UInt8>, at start: Int) -> Int? {
        var i = start + 1
        while i < bytes.count && bytes[i] == 0x20 { i += 1 }
        var digits = 0
        while i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 { i += 1; digits += 1 }
        guard digits > 0, i < bytes.count, bytes[i] == UInt8(ascii: ".") else { return nil }
        i += 1
        digits = 0
        while i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 { i += 1; digits += 1 }
        guard digits > 0, i < bytes.count, bytes[i] == UInt8(ascii: "]") else { return nil }
        let limit = min(bytes.count, i + 4096)
        while i < limit {
            if bytes[i] == 0x0A { return i + 1 }
            i += 1
        }
        return nil
    }
}
