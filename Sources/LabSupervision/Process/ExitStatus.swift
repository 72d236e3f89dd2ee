
/// qlab's one exit-code table, used by every command (README, `qlab --help`).
///
/// Cancellation follows the shell's convention, 128 + the signal number, so a
/// CI system sees the same status it would for any other program it stopped.
public enum ExitStatus: Int32, Sendable, CaseIterable {
    /// The command did what it was asked.
    case success = 0
    /// The operation ran and failed (for `run`: a test did not pass).
    case failed = 1
    /// Bad input: usage, arguments, a lab file.
    case usage = 2
    /// No such lab, or the lab is not running when it must be.
    case noSuchLab = 3
    /// The lab belongs to another command (a `qlab run` using it, or one holding its lock).
    case busy = 4
    /// The command's own timeout expired.
    case timeout = 124
    /// Cancelled by SIGHUP.
    case hangup = 129
    /// Cancelled by SIGINT (Ctrl-C).
    case interrupted = 130
    /// Cancelled by SIGTERM.
    case terminated = 143

    /// The status for a command cancelled by `signal` (128 + signal, the shell's convention).
    public static func cancelled(by signal: Int32) -> Int32 { 128 + signal }

    /// One line each, for `--help` and the README.
    public static var table: String {
        """
        Exit codes (every command):
          0        success
          1        the operation ran and failed (run: a test did not pass)
          2        bad input or usage
          3        no such lab, or the lab is not running when it must be
          4        the lab is busy: another command owns it (a qlab run, a lock)
          124      the command's own timeout expired
          129/130/143  cancelled by SIGHUP/SIGINT/SIGTERM
        """
    }
}
