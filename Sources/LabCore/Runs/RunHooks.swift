import Platform

/// The lab's `before_all` and `after_all` hooks: once around the whole run
/// (once under `--jobs` too), on the host, with the run's context in their
/// environment (``runHookEnvironment(_:matrix:results:)``). `after_all` runs
/// whatever happened before it: a failed before_all, failures, a cancelled
/// run (it is not cancelled with the run; a second stop request kills it).
extension TestRunner {
    /// Runs `hook` as `name` (`before_all`, `after_all`) and says how it ended.
    func runRunHook(_ name: String, _ hook: String, matrix: TestMatrix, results: [TestResult]) async -> RunHookResult {
        let environment = runHookEnvironment(name, matrix: matrix, results: results)
        let (directory, timeout) = (lab.directory, lab.hooks.timeout)
        let begin = ContinuousClock.now
        let outcome: CapturedRun?
        if name == "after_all" {
            // Not cancelled with the run: only a second stop request (hurry) ends it early.
            let task = Task.detached { try? await HostHook.run(hook, directory: directory, environment: environment, timeout: timeout) }
            options.stop?.onRequest { count in if count > 1 { task.cancel() } }
            outcome = await task.value
        } else {
            outcome = try? await HostHook.run(hook, directory: directory, environment: environment, timeout: timeout)
        }
        let seconds = (ContinuousClock.now - begin).inSeconds
        guard let outcome else {
            return RunHookResult(hook: name, outcome: .error, seconds: seconds, message: "\(name) hook could not be started")
        }
        if outcome.cancelled || (name == "before_all" && Task.isCancelled) {
            observe(.note("\(name) hook cancelled"))
            return RunHookResult(hook: name, outcome: .cancelled, seconds: seconds, message: "the run was cancelled during \(name)", output: outcome.output)
        }
        guard outcome.succeeded else {
            let message = "\(name) hook " + Self.describe(outcome)
            observe(.note(message))
            return RunHookResult(hook: name, outcome: .error, seconds: seconds, message: message, output: outcome.output)
        }
        return RunHookResult(hook: name, outcome: .passed, seconds: seconds, output: outcome.output)
    }

    /// What a run hook sees: the lab, the hook's name, the run's size, guests
    /// and devices, its labels; `after_all` also the run's verdict
    /// (`QLAB_RESULT`: passed, failed or cancelled) and summary line.
    func runHookEnvironment(_ name: String, matrix: TestMatrix, results: [TestResult]) -> [String: String] {
        var env = controller.environment
        env["QLAB_LAB"] = lab.name
        env["QLAB_LAB_FILE"] = lab.file
        env["QLAB_HOOK"] = name
        env["QLAB_RUN_TOTAL"] = String(matrix.entries.count)
        env["QLAB_GUESTS"] = matrix.byGuest.map(\.0).joined(separator: " ")
        env["QLAB_DEVICES"] = lab.devices.map(\.name).joined(separator: " ")
        env.merge(RunLabel.environment(labels)) { $1 }
        if name == "after_all" {
            var report = TestReport(lab: lab.name, startedAt: 0, duration: 0, hostname: "", shards: [], results: results)
            report.labels = labels
            let verdict = report.wasCancelled ? "cancelled" : report.allPassed ? "passed" : "failed"
            env["QLAB_RESULT"] = verdict
            env["QLAB_SUMMARY"] = report.summaryLine
        }
        return env
    }
}
