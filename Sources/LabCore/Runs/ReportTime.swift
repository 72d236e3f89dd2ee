#if canImport(Glibc)
import Glibc
#endif

/// Times and the host name as run reports write them: ISO 8601 UTC for
/// people and JUnit, seconds rounded to the millisecond for arithmetic.
///
/// Minimal on purpose: the shared JSON time helper (branch json) may replace it.
public enum ReportTime {
    /// `seconds` (Unix time) as `2026-11-30T17:39:39.123Z` (`gmtime_r(3)`);
    /// a value no calendar holds (NaN, out of range) gives the epoch.
    public static func iso8601(_ seconds: Double) -> String {
        let millis = (seconds * 1000).rounded()
        guard millis.isFinite, millis >= 0, millis < 253_402_300_800_000 else { return "1970-01-01T00:00:00.000Z" }
        let total = Int(millis)
        var time = time_t(total / 1000)
        var parts = tm()
        guard gmtime_r(&time, &parts) != nil else { return "1970-01-01T00:00:00.000Z" }
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(total % 1000), 3))Z"
    }

    /// `value` rounded to the millisecond; 0 for what is not a finite number.
    public static func seconds(_ value: Double) -> Double {
        guard value.isFinite, abs(value) < 1e15 else { return 0 }
        return (value * 1000).rounded() / 1000
    }

    /// This machine's name (`gethostname(2)`), "localhost" when it has none.
    public static func hostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "localhost" : name
    }
}
