import Platform

/// Runs a short-lived helper tool (qemu-img) to completion with its stdout
/// and stderr captured together (``CapturedRun``). Every run has a
/// deadline: a tool that hangs is killed (its whole process group) and the
/// run fails, saying so.
enum ToolRunner {
    /// How long a helper tool may run: qemu-img on an overlay or a variable
    /// store and `qemu -device vfio-pci,help` take well under a second.
    static let timeout: Duration = .seconds(60)

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
    static func run(_ argv: [String], timeout: Duration = timeout) -> Result<Outcome, LabPathError> {
        do {
            return outcome(argv, try CapturedRun.runBlocking(argv, timeout: timeout), timeout: timeout)
        } catch {
            return .failure(LabPathError(message: "cannot run \(argv[0]): \(error)"))
        }
    }

    /// The same run without holding a cooperative-pool thread, for async callers.
    static func run(_ argv: [String], timeout: Duration = timeout) async -> Result<Outcome, LabPathError> {
        do {
            return outcome(argv, try await CapturedRun.run(argv, timeout: timeout), timeout: timeout)
        } catch {
            return .failure(LabPathError(message: "cannot run \(argv[0]): \(error)"))
        }
    }

    private static func outcome(_ argv: [String], _ run: CapturedRun, timeout: Duration) -> Result<Outcome, LabPathError> {
        if run.timedOut {
            return .failure(LabPathError(message: "\(argv[0]) did not finish within \(timeout) and was killed"))
        }
        if run.cancelled { return .failure(LabPathError(message: "\(argv[0]) was cancelled")) }
        return .success(Outcome(run))
    }
}
