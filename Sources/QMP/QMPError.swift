/// Everything a QMP call can fail with.
public enum QMPError: Error, Sendable, Hashable, CustomStringConvertible {
    /// QEMU answered with an error: its `class` (GenericError,
    /// CommandNotFound, DeviceNotFound, ...) and `desc`.
    case command(name: String, errorClass: String, description: String)
    /// No reply within the timeout. The command may still run in QEMU.
    case timeout(command: String, seconds: Double)
    /// The socket dropped or QEMU exited; says how.
    case disconnected(String)
    /// QEMU said something QMP does not allow here (no greeting, a bad reply).
    case protocolViolation(String)
    /// A value could not be serialised (NaN, infinity).
    case encoding(String)
    /// Connecting failed.
    case connect(String)
    /// The waiting task was cancelled.
    case cancelled

    public var description: String {
        switch self {
        case .command(let name, let errorClass, let description): return "\(name): \(errorClass): \(description)"
        case .timeout(let command, let seconds): return "\(command): no reply from QEMU within \(formatSeconds(seconds))"
        case .disconnected(let reason): return "QMP connection lost: \(reason)"
        case .protocolViolation(let text): return "QMP protocol error: \(text)"
        case .encoding(let text): return "cannot encode QMP arguments: \(text)"
        case .connect(let text): return "cannot connect to QMP: \(text)"
        case .cancelled: return "cancelled"
        }
    }

    /// QMP's error class, for `.command` errors.
    public var errorClass: String? {
        if case .command(_, let errorClass, _) = self { return errorClass }
        return nil
    }
}

func formatSeconds(_ seconds: Double) -> String {
    seconds >= 1 ? "\(Int(seconds.rounded())) s" : "\(Int((seconds * 1000).rounded())) ms"
}
