#if canImport(Glibc)
import Glibc
#endif

/// Wall-clock time as qlab writes it: Unix seconds from `clock_gettime(CLOCK_REALTIME)`
/// and ISO 8601 UTC text made with `gmtime_r(3)` (no locale, no formatter state).
public enum UTCTime {
    /// Now, Unix seconds with sub-second precision.
    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// `2026-11-30T17:40:03.123Z`: UTC, rounded to the millisecond; a value no
    /// calendar holds (NaN, beyond year 9999) gives the epoch.
    public static func iso8601(_ secondsSinceEpoch: Double) -> String {
        let millis = (secondsSinceEpoch * 1000).rounded()
        guard millis.isFinite, abs(millis) < 253_402_300_800_000 else { return "1970-01-01T00:00:00.000Z" }
        let totalMilliseconds = Int64(millis)
        var seconds = totalMilliseconds / 1000
        var milliseconds = totalMilliseconds % 1000
        if milliseconds < 0 {
            milliseconds += 1000
            seconds -= 1
        }
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func pad(_ value: Int, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(Int(parts.tm_year) + 1900, 4))-\(pad(Int(parts.tm_mon) + 1, 2))-\(pad(Int(parts.tm_mday), 2))"
            + "T\(pad(Int(parts.tm_hour), 2)):\(pad(Int(parts.tm_min), 2)):\(pad(Int(parts.tm_sec), 2)).\(pad(Int(milliseconds), 3))Z"
    }

    /// `2026-11-30T17:40:03Z`: UTC, whole seconds (truncated), `gmtime_r(3)`.
    public static func iso8601Seconds(_ secondsSinceEpoch: Double) -> String {
        var time = time_t(secondsSinceEpoch)
        var parts = tm()
        gmtime_r(&time, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }
}
