import Platform

/// A host-side hook (`hooks.before_each`, `hooks.after_each`): a shell
/// command run with `/bin/sh -c` in the lab file's directory, with the run's
/// context in its environment, killed (its whole process group) at its
/// timeout and when the run is cancelled. The run loop awaits the hook; the
/// wait holds no cooperative-pool thread (``CapturedRun/run(_:environment:timeout:outputLimit:)``).
public enum HostHook {
    public static func run(_ command: String, directory: String, environment: [String: String], timeout: Duration) async throws -> CapturedRun {
        let script = "cd " + ShellQuoting.quote(directory) + " && " + command
        return try await CapturedRun.run(["/bin/sh", "-c", script], environment: environment, timeout: timeout)
    }
}
