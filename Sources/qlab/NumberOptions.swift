import ArgumentParser
import LabCore

/// A seconds option (`--timeout`) checked by ``UserNumbers``: `inf`, `nan`,
/// `1e300`, zero or a negative number is a usage error (exit 2, with the
/// command's usage), not a trap. Commands call it in `validate()`.
func checkedSeconds(_ value: Double, option: String, allowZero: Bool = false) throws(ValidationError) -> Duration {
    switch UserNumbers.seconds(value, allowZero: allowZero) {
    case .success(let duration): return duration
    case .failure(let refusal): throw ValidationError("\(option) \(refusal)")
    }
}

/// A count option (`--repeat`) in `range`; outside it, a usage error (exit 2).
func checkedCount(_ value: Int, in range: ClosedRange<Int>, option: String) throws(ValidationError) -> Int {
    switch UserNumbers.count(value, in: range) {
    case .success(let count): return count
    case .failure(let refusal): throw ValidationError("\(option) \(refusal)")
    }
}
