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

        init(_ run: CapturedRun) {
            status = run.shellStatus
            output = run.output
        }
    }

    /// Blocks the calling thread: only for the synchronous planner's option
    /// probe (``RombarSpelling``, `qemu -device vfio-pci,help`, while argv is
    /// built synchronously). Everything else awaits the async form.
    static func run(_ argv: [String]) -> Result<Outcome, LabPathError> {
        do {
            return .success(Outcome(try CapturedRun.runBlocking(argv)))
        } catch {
            return .failure(LabPathError(message: "cannot run \(argv[0]): \(error)"))
        }
    }

    /// The same run without holding a cooperative-pool thread, for async callers.
    static func run(_ argv: [String]) async -> Result<Outcome, LabPathError> {
        do {
            return .success(Outcome(try await CapturedRun.run(argv)))
        } catch {
            return .failure(LabPathError(message: "cannot run \(argv[0]): \(error)"))
        }
    }
}
