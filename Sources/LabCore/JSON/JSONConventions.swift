import Platform
import QMP


/// The conventions of every JSON document qlab prints or writes
/// (docs/json.md): keys snake_case, times ISO 8601 UTC strings with
/// milliseconds (plus a `_seconds` number where arithmetic is wanted),
/// durations in seconds rounded to the millisecond. Values are built here,
/// in one place, so no call site rounds or formats on its own.
extension JSONValue {
    /// A duration in seconds, rounded to the millisecond (`12.345`).
    public static func seconds(_ value: Double) -> JSONValue {
        .double(JSONTime.rounded(value))
    }

    /// A duration in seconds, rounded to the millisecond.
    public static func seconds(_ duration: Duration) -> JSONValue {
        seconds(duration.milliseconds / 1000)
    }

    /// A point in time, seconds since the epoch, as an ISO 8601 UTC string
    /// with milliseconds: `2026-11-30T17:40:03.123Z`.
    public static func timestamp(_ secondsSinceEpoch: Double) -> JSONValue {
        .string(JSONTime.iso8601(secondsSinceEpoch))
    }

    /// An optional duration or time: `null` when absent.
    public static func seconds(_ value: Double?) -> JSONValue { value.map { seconds($0) } ?? .null }
    public static func timestamp(_ value: Double?) -> JSONValue { value.map { timestamp($0) } ?? .null }
}

/// ISO 8601 text for JSON output, made with `gmtime_r(3)` (no locale, no formatter state).
public enum JSONTime {
    /// Seconds rounded to the millisecond; 0 for what is not a finite number
    /// (or is too large to be a duration or a time).
    public static func rounded(_ value: Double) -> Double {
        guard value.isFinite, abs(value) < 1e15 else { return 0 }
        return (value * 1000).rounded() / 1000
    }

    /// `2026-11-30T17:40:03.123Z`: UTC, rounded to the millisecond; a value no
    /// calendar holds (NaN, beyond year 9999) gives the epoch.
    public static func iso8601(_ secondsSinceEpoch: Double) -> String {
        UTCTime.iso8601(secondsSinceEpoch)
    }
}

/// The parts of the JSON conventions that are not single values.
public enum JSONOutput {
    /// What a command prints on stdout with `--json` when it fails: the
    /// message it also wrote to stderr, and its exit status (the ExitStatus table).
    public static func error(message: String, exitCode: Int32) -> JSONValue {
        ["error": ["message": .string(message), "exit_code": JSONValue(exitCode)]]
    }

    /// Keys qlab's JSON may use: lower-case snake_case (`^[a-z][a-z0-9_]*$`).
    public static func isSnakeCase(_ key: String) -> Bool {
        guard let first = key.utf8.first, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first) else { return false }
        return key.utf8.allSatisfy {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "_")
        }
    }

    /// Every key of every object in `value` (recursively) that is not
    /// snake_case, as a path such as `devices[0].iommuGroup`.
    public static func keysNotSnakeCase(in value: JSONValue, path: String = "") -> [String] {
        switch value {
        case .object(let object):
            return object.flatMap { key, child in
                let childPath = path.isEmpty ? key : path + "." + key
                return (isSnakeCase(key) ? [] : [childPath]) + keysNotSnakeCase(in: child, path: childPath)
            }
        case .array(let array):
            return array.enumerated().flatMap { index, child in keysNotSnakeCase(in: child, path: path + "[\(index)]") }
        default:
            return []
        }
    }
}
