
/// qlab's one exit-code table, used by every command (README, `qlab --help`).
///
/// Cancellation follows the shell's convention, 128 + the signal number, so a
/// CI system sees the same status it would for any other program it stopped.
public enum ExitStatus: Int32, Sendable, CaseIterable {
    /// The command did what it was asked.
    case success = 0
    /// The operation ran and failed (for `run`: a test failed or timed out).
    case failed = 1
    /// Bad input: usage, arguments, a lab file.
    case usage = 2
    /// No such lab, or the lab is not running when it must be.
    case noSuchLab = 3
    /// The lab, or a host card it needs, belongs to another command (a `qlab run` using it, a
    /// `qlab up` that started it, a lab holding the card, a command on its console, or one
    /// holding its lock): the command could not start.
    case busy = 4
    /// `run`: no test failed, but infrastructure errors were left after the retries
    /// (QEMU died, a guest did not boot, a hook failed: outcome `error`).
    case infrastructure = 5
    /// The command's own timeout expired.
    case timeout = 124
    /// Cancelled by SIGHUP.
    case hangup = 129
    /// Cancelled by SIGINT (Ctrl-C).
    case interrupted = 130
    /// Cancelled by SIGTERM.
    case terminated = 143

    /// The status for a command cancelled by `signal` (128 + signal, the shell's convention;
    /// SIGINT for a signal the table has no row for).
    public static func cancelled(by signal: Int32) -> ExitStatus {
        ExitStatus(rawValue: 128 + signal).flatMap { $0.isCancellation ? $0 : nil } ?? .interrupted
    }

    /// The status an error means: its own (``ExitStatusCarrying``), else ``failed``.
    public init(for error: any Error) {
        self = (error as? any ExitStatusCarrying)?.exitStatus ?? .failed
    }

    /// 129, 130 or 143.
    public var isCancellation: Bool { self == .hangup || self == .interrupted || self == .terminated }

    /// What the status means: the table's line (and the README's, checked by a test).
    public var meaning: String {
        switch self {
        case .success: return "success"
        case .failed: return "the operation ran and failed (`run`: a test failed or timed out)"
        case .usage: return "bad input or usage: arguments, a lab file"
        case .noSuchLab: return "no such lab, or the lab is not running when it must be"
        case .busy: return "the lab or a host card it needs is busy: another command owns it (a `qlab run` using it, a `qlab up` that started it, a lab holding the card, a command on its console, or one holding its lock); not a test result"
        case .infrastructure: return "`run`: no test failed, but an infrastructure error was left after the retries (QEMU died, a guest did not boot, a hook failed)"
        case .timeout: return "the command's own timeout expired"
        case .hangup, .interrupted, .terminated: return "cancelled by SIGHUP, SIGINT (Ctrl-C), SIGTERM"
        }
    }

    /// The table's rows: one per meaning (the three cancellations share one), in order.
    public static var rows: [(codes: [ExitStatus], meaning: String)] {
        var rows: [(codes: [ExitStatus], meaning: String)] = []
        for status in allCases {
            if let last = rows.last, last.meaning == status.meaning {
                rows[rows.count - 1].codes.append(status)
            } else {
                rows.append(([status], status.meaning))
            }
        }
        return rows
    }

    /// The rows for `qlab --help`, wrapped to 80 columns under their meaning (the
    /// README has the same rows as a Markdown table).
    public static var table: String {
        let indent = String(repeating: " ", count: 17)
        var lines = ["Exit codes (every command):"]
        for row in rows {
            let codes = row.codes.map { String($0.rawValue) }.joined(separator: ", ")
            var line = "  " + codes + String(repeating: " ", count: max(1, 15 - codes.count))
            for word in row.meaning.replacingBackticks().split(separator: " ") {
                if line.count + 1 + word.count > 79 && line.count > indent.count {
                    lines.append(line)
                    line = indent
                } else if line.count > indent.count {
                    line += " "
                }
                line += word
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    /// The README's table (the rows of ``table`` in Markdown).
    public static var markdownTable: String {
        let lines = rows.map { row in "| " + row.codes.map { String($0.rawValue) }.joined(separator: ", ") + " | " + row.meaning + " |" }
        return (["| code | meaning |", "|---|---|"] + lines).joined(separator: "\n")
    }
}

/// An error that says which row of the exit-code table it means. Every error
/// type a command can end with adopts it; `qlab`'s entry point maps an error
/// to its status once (``ExitStatus/init(for:)``), and no command picks a number.
public protocol ExitStatusCarrying: Error {
    var exitStatus: ExitStatus { get }
}

extension String {
    /// `qlab run` -> qlab run: the terminal's table has no Markdown.
    fileprivate func replacingBackticks() -> String {
        String(filter { $0 != "`" })
    }
}
