/// A host-side hook (`hooks.before_each`, `hooks.after_each`): a shell
/// command run with `/bin/sh -c` in the lab file's directory, with the run's
/// context in its environment, killed (its whole process group) at its
/// timeout and when the run is cancelled. The run loop is sequential, so the
/// hook blocks it while it runs.
public enum HostHook {
    public static func run(_ command: String, directory: String, environment: [String: String], timeout: Duration) throws -> CapturedRun {
        let script = "cd " + ShellQuoting.quote(directory) + " && " + command
        return try CapturedRun.run(["/bin/sh", "-c", script], environment: environment, timeout: timeout)
    }
}
