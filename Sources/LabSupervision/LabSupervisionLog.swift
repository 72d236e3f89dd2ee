import Logging

/// LabSupervision's logger (`qlab.supervision`): QEMU's launch, readiness and
/// exit as the supervisor sees them. The supervisor writes it to its stderr
/// (`$STATE/LAB/supervisor.log`) at the level `QLAB_LOG_LEVEL` gives (default: errors only).
public enum LabSupervisionLog {
    public static let logger = Logger(label: "qlab.supervision")

    /// `trace`...`critical` as swift-log spells them; nil for anything else.
    public static func level(_ text: String) -> Logger.Level? { Logger.Level(rawValue: text.lowercased()) }

    /// The environment variable that carries the level from `qlab` to the supervisors it starts.
    public static let environmentVariable = "QLAB_LOG_LEVEL"

    /// Logs to standard error at `level` (the default handler would print `info` to stdout).
    public static func bootstrap(level: Logger.Level) {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
