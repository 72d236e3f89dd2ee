/// A way to run shell commands in a lab's guest: its serial console
/// (``GuestConsole``) or the QEMU guest agent (``GuestAgent``).
///
/// One command at a time: a session is a single conversation with the guest.
public protocol GuestSession: AnyObject, Sendable {
    /// Runs `command` with the guest's shell and waits at most `timeout` for it to end.
    /// A non-zero exit status is a result, not an error; errors are
    /// ``GuestError``s (a timeout, a lost connection).
    func run(_ command: String, timeout: Duration) async throws -> GuestCommandResult
    /// Which transport this is, for messages ("console", "agent").
    var transportName: String { get }
    func close()
}

/// What a command did in the guest.
public struct GuestCommandResult: Sendable, Hashable {
    /// What the command printed. Over the serial console standard output
    /// and standard error are one stream, with `\r\n` turned into `\n`.
    public var output: String
    /// Standard error, when the transport keeps it apart (the guest agent);
    /// nil over the console, where it is part of `output`.
    public var errorOutput: String?
    public var exitStatus: Int32
    /// From sending the command to seeing its end.
    public var duration: Duration
    /// Part of the output was lost: it did not fit the console buffer, or
    /// the agent cut it (qemu-ga keeps at most 16 MiB per stream).
    public var truncated: Bool

    public init(output: String, errorOutput: String? = nil, exitStatus: Int32, duration: Duration, truncated: Bool = false) {
        self.output = output
        self.errorOutput = errorOutput
        self.exitStatus = exitStatus
        self.duration = duration
        self.truncated = truncated
    }
}

/// Errors of guest interaction. Each says what happened and, where the
/// console is involved, carries what it printed last.
public enum GuestError: Error, Sendable, CustomStringConvertible {
    /// The console or agent socket could not be opened.
    case connect(String)
    /// Waiting for console text (`what`) took longer than `seconds`.
    case timeout(what: String, seconds: Double, consoleTail: String)
    /// A command did not end within `seconds`. `recovered` tells whether the
    /// console answered again afterwards (after Ctrl-C); when false, the
    /// console is unusable until the guest is restarted.
    case commandTimeout(command: String, seconds: Double, recovered: Bool, consoleTail: String)
    /// The console does not answer a probe (a hung guest, or another client holds the socket).
    case consoleUnusable(reason: String, consoleTail: String)
    /// The connection ended (QEMU exited, the socket was closed).
    case disconnected(reason: String, consoleTail: String)
    /// The console login did not reach a shell.
    case loginFailed(reason: String, consoleTail: String)
    /// The command cannot be typed on the console as it is.
    case commandNotTypeable(String)
    /// The guest agent answered with an error, or not in its protocol.
    case agent(String)
    /// Another operation is using this session.
    case busy
    case cancelled

    public var description: String {
        switch self {
        case .connect(let text): return "cannot connect to the guest: \(text)"
        case .timeout(let what, let seconds, let tail):
            return "no \(what) on the guest console within \(formatGuestSeconds(seconds))" + Self.tailText(tail)
        case .commandTimeout(let command, let seconds, let recovered, let tail):
            return "the guest command did not finish within \(formatGuestSeconds(seconds)): \(Self.excerpt(command))"
                + (recovered ? " (interrupted; the console answers again)" : " (the console does not answer any more: restart the guest)")
                + Self.tailText(tail)
        case .consoleUnusable(let reason, let tail):
            return "the guest console is unusable: \(reason)" + Self.tailText(tail)
        case .disconnected(let reason, let tail):
            return "lost the guest connection: \(reason)" + Self.tailText(tail)
        case .loginFailed(let reason, let tail):
            return "console login failed: \(reason)" + Self.tailText(tail)
        case .commandNotTypeable(let text): return text
        case .agent(let text): return "guest agent: \(text)"
        case .busy: return "the guest session is busy with another command (one command at a time)"
        case .cancelled: return "cancelled"
        }
    }

    /// What the console printed last, when the error carries it.
    public var consoleTail: String? {
        switch self {
        case .timeout(_, _, let tail), .commandTimeout(_, _, _, let tail), .consoleUnusable(_, let tail),
            .disconnected(_, let tail), .loginFailed(_, let tail):
            return tail
        default: return nil
        }
    }

    /// True for the timeouts (`qlab exec` exits 124 for them).
    public var isTimeout: Bool {
        switch self {
        case .timeout, .commandTimeout: return true
        default: return false
        }
    }

    static func tailText(_ tail: String) -> String {
        let trimmed = tail.split(separator: "\n", omittingEmptySubsequences: false).suffix(12)
        guard !trimmed.allSatisfy({ $0.allSatisfy(\.isWhitespace) }) else { return "\nthe console printed nothing" }
        return "\nthe console's last lines:\n" + trimmed.map { "  | " + $0 }.joined(separator: "\n")
    }

    static func excerpt(_ command: String) -> String {
        let flat = command.replacingAll("\n", with: "; ")
        return flat.count > 120 ? String(flat.prefix(117)) + "..." : flat
    }
}

func formatGuestSeconds(_ seconds: Double) -> String {
    if seconds >= 1 {
        return seconds == seconds.rounded() ? "\(Int(seconds)) s" : "\((seconds * 10).rounded() / 10) s"
    }
    return "\(Int((seconds * 1000).rounded())) ms"
}

extension String {
    /// Every occurrence of `target` replaced (no Foundation here).
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        return split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}

extension GuestError: ExitStatusCarrying {
    /// 124 for the timeouts, 1 otherwise.
    public var exitStatus: ExitStatus { isTimeout ? .timeout : .failed }
}
