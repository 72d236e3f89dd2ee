#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs a short-lived helper tool (qemu-img) to completion with its stdout
/// and stderr captured together (``CapturedRun``).
enum ToolRunner {
    struct Outcome {
        /// The exit status, or 128+signal when it was killed.
        var status: Int32
        var output: String
    }

    static func run(_ argv: [String]) -> Result<Outcome, LabPathError> {
        do {
            let run = try CapturedRun.run(argv)
            return .success(Outcome(status: run.shellStatus, output: run.output))
        } catch {
            return .failure(LabPathError(message: "cannot run \(argv[0]): \(error)"))
        }
    }
}
