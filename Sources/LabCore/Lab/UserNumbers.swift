/// Numbers a user types (command-line options, lab file values), checked
/// before they reach an integer conversion: `inf`, `nan`, `1e300` or a
/// timeout of zero are refused with a message, never trapped on.
public enum UserNumbers {
    /// The longest timeout or duration qlab accepts: one week.
    public static let maximumSeconds: Double = 7 * 24 * 3600

    /// The most runs `--repeat` or shards `--shard K/N` may ask for.
    public static let maximumCount = 100_000

    /// Why a number was refused, said for the option or field that gave it.
    public struct Refusal: Error, Sendable, Hashable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// `seconds` as a Duration when it is finite, above zero (or zero when
    /// `allowZero`) and at most ``maximumSeconds``.
    public static func seconds(_ seconds: Double, allowZero: Bool = false) -> Result<Duration, Refusal> {
        let lowest = allowZero ? "0" : "more than 0"
        guard seconds.isFinite else { return .failure(Refusal(message: "\(seconds) is not a number of seconds; give \(lowest) up to \(Int(maximumSeconds)) (a week)")) }
        guard allowZero ? seconds >= 0 : seconds > 0 else {
            return .failure(Refusal(message: "\(format(seconds)) is too small; give \(lowest) seconds"))
        }
        guard seconds <= maximumSeconds else {
            return .failure(Refusal(message: "\(format(seconds)) seconds is more than a week; give at most \(Int(maximumSeconds))"))
        }
        let milliseconds = Int64((seconds * 1000).rounded())
        guard allowZero || milliseconds > 0 else { return .failure(Refusal(message: "\(format(seconds)) is below a millisecond; give at least 0.001 seconds")) }
        return .success(.milliseconds(milliseconds))
    }

    /// A whole count in `range` (e.g. `--repeat`).
    public static func count(_ value: Int, in range: ClosedRange<Int>) -> Result<Int, Refusal> {
        range.contains(value) ? .success(value) : .failure(Refusal(message: "\(value) is out of range; use \(range.lowerBound)...\(range.upperBound)"))
    }

    /// `12.0` as `12`, other values as Swift prints them.
    static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }
}
