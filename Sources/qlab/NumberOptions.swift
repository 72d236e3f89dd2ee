import ArgumentParser
import LabCore

/// A seconds option (`--timeout`) checked by ``UserNumbers``: `inf`, `nan`,
/// `1e300`, zero or a negative number is a usage error (exit 2), not a trap.
func checkedSeconds(_ value: Double, option: String, command: String, allowZero: Bool = false) throws -> Duration {
    switch UserNumbers.seconds(value, allowZero: allowZero) {
    case .success(let duration): return duration
    case .failure(let refusal):
        reportError("qlab \(command): \(option) \(refusal)")
        throw ExitCode(ExitStatus.usage.rawValue)
    }
}

/// A count option (`--repeat`) in `range`; outside it, a usage error (exit 2).
func checkedCount(_ value: Int, in range: ClosedRange<Int>, option: String, command: String) throws -> Int {
    switch UserNumbers.count(value, in: range) {
    case .success(let count): return count
    case .failure(let refusal):
        reportError("qlab \(command): \(option) \(refusal)")
        throw ExitCode(ExitStatus.usage.rawValue)
    }
}
