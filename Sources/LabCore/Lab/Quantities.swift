import Platform

/// A size in bytes, written in a lab file as `512M`, `1G`, `1.5G`, `64MiB`
/// (binary units; a bare number means MiB, as QEMU's `-m` reads it).
public struct ByteSize: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var bytes: UInt64

    public init(bytes: UInt64) { self.bytes = bytes }

    public static func mebibytes(_ n: UInt64) -> ByteSize { ByteSize(bytes: n << 20) }

    public init?(parsing text: String) {
        var digits = Substring(text.trimmingSpaces())
        var shift: UInt64 = 20
        let suffixes: [(String, UInt64)] = [
            ("KiB", 10), ("MiB", 20), ("GiB", 30), ("TiB", 40), ("KB", 10), ("MB", 20), ("GB", 30), ("TB", 40),
            ("K", 10), ("M", 20), ("G", 30), ("T", 40), ("k", 10), ("B", 0),
        ]
        for (suffix, s) in suffixes where digits.hasSuffix(suffix) {
            digits = digits.dropLast(suffix.count)
            shift = s
            break
        }
        digits = Substring(String(digits).trimmingSpaces())
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
            let value = Double(digits), value > 0
        else { return nil }
        let bytes = value * Double(UInt64(1) << shift)
        guard bytes < 1.8e19, bytes.rounded() == bytes else { return nil }
        self.bytes = UInt64(bytes)
    }

    public var mebibytes: UInt64 { bytes >> 20 }
    public var isWholeMebibytes: Bool { bytes & ((1 << 20) - 1) == 0 }

    public var description: String {
        if bytes % (1 << 30) == 0 { return "\(bytes >> 30)G" }
        if bytes % (1 << 20) == 0 { return "\(bytes >> 20)M" }
        return "\(bytes)B"
    }

    /// The size for people: 512 MiB, 64 KiB, 1.5 KiB. The largest unit that
    /// divides exactly (2112 MiB, not 2.1 GiB), else one decimal, truncated.
    /// `description` stays the lab-file spelling (`512M`).
    public var humanReadable: String {
        let units: [(UInt64, String)] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
        for (size, name) in units where bytes >= size && bytes % size == 0 {
            return "\(bytes / size) \(name)"
        }
        if let (size, name) = units.first(where: { bytes >= $0.0 }) {
            let tenths = bytes * 10 / size
            return "\(tenths / 10).\(tenths % 10) \(name)"
        }
        return "\(bytes) B"
    }

    public static func < (a: ByteSize, b: ByteSize) -> Bool { a.bytes < b.bytes }
}

/// Durations in lab files: `60s`, `2m`, `1h`, `500ms`, `1m30s`; a bare number is seconds.
/// Above zero and at most ``UserNumbers/maximumSeconds`` (a week): `inf`,
/// `1e300` or `99999999999999h` are refused, not trapped on.
public enum LabDuration {
    public static func parse(_ text: String) -> Duration? {
        guard let milliseconds = milliseconds(text), milliseconds > 0,
            Double(milliseconds) <= UserNumbers.maximumSeconds * 1000
        else { return nil }
        return .milliseconds(Int64(milliseconds))
    }

    /// The total in milliseconds as a Double (so no size overflows), or nil when malformed.
    static func milliseconds(_ text: String) -> Double? {
        let s = text.trimmingSpaces()
        guard !s.isEmpty else { return nil }
        if s.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }), let seconds = Double(s) { return (seconds * 1000).rounded() }
        var total: Double = 0
        var index = s.startIndex
        var sawComponent = false
        while index < s.endIndex {
            let numberStart = index
            while index < s.endIndex, s[index].isASCII, s[index].isNumber || s[index] == "." { index = s.index(after: index) }
            guard let value = Double(s[numberStart..<index]) else { return nil }
            let unitStart = index
            while index < s.endIndex, s[index].isASCII, s[index].isLetter { index = s.index(after: index) }
            let factor: Double
            switch s[unitStart..<index] {
            case "ms": factor = 1
            case "s": factor = 1000
            case "m", "min": factor = 60_000
            case "h": factor = 3_600_000
            default: return nil
            }
            total += (value * factor).rounded()
            sawComponent = true
        }
        return sawComponent && total.isFinite ? total : nil
    }

    /// `90s` → `1m30s`, the way lab files write it.
    public static func format(_ duration: Duration) -> String {
        let ms = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        if ms % 1000 != 0 { return "\(ms)ms" }
        let s = ms / 1000
        if s >= 60, s % 60 == 0 { return s % 3600 == 0 ? "\(s / 3600)h" : "\(s / 60)m" }
        if s > 60 { return "\(s / 60)m\(s % 60)s" }
        return "\(s)s"
    }
}

/// "Did you mean" for misspelt keys and names.
enum Suggestion {
    /// The candidate within edit distance 2 (or 1 for short words), closest first.
    static func closest(to word: String, in candidates: [String]) -> String? {
        let limit = word.count <= 4 ? 1 : 2
        var best: (String, Int)?
        for candidate in candidates {
            let d = distance(word.lowercased(), candidate.lowercased())
            if d <= limit, d < (best?.1 ?? Int.max) { best = (candidate, d) }
        }
        if best == nil, word.count >= 3 {
            best = candidates.first { $0.hasPrefix(word) || word.hasPrefix($0) }.map { ($0, 0) }
        }
        return best?.0
    }

    /// Levenshtein distance over characters.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
