import ArgumentParser
import LabCore
import Logging
import Platform
import QMP


/// Options every command takes (an `@OptionGroup` of each command, see
/// ``UsesGlobalOptions``): `--trace-qmp FILE` (every QMP message this command
/// sends and receives, as JSON Lines), `-v`/`--verbose` (log level `debug`) and `--log-level LEVEL`
/// (`trace` ... `critical`). A command's own extra output has its own flag
/// (`hotplug --steps`): -v is logging only. Logs go to stderr, through swift-log, one logger
/// per module (qlab.cli, qlab.labcore, qlab.supervision, qlab.qmp); without
/// these options only errors are logged, which qlab prints itself anyway: quiet.
struct GlobalOptions: ParsableArguments {
    @Option(name: .customLong("trace-qmp"), help: ArgumentHelp("Write every QMP message this command sends and receives to FILE (JSON Lines).", valueName: "FILE"))
    var traceQMP: String?

    @Option(help: ArgumentHelp("Log at LEVEL and above on stderr.", valueName: "LEVEL"))
    var logLevel: LogLevel?

    @Flag(name: .shortAndLong, help: "Log at level debug on stderr (hotplug, unplug and snapshot print their step times with --steps).")
    var verbose = false

    static let help = "Every command also takes, after its name, --trace-qmp FILE (its QMP messages in and out, JSON Lines), -v/--verbose and --log-level trace|debug|info|notice|warning|error|critical (logs on stderr)."

    /// The level in force: `--log-level`, else `debug` with -v, else what a parent
    /// qlab passed down (QLAB_LOG_LEVEL), else errors only.
    var effectiveLevel: Logger.Level {
        if let logLevel { return logLevel.level }
        if verbose { return .debug }
        return ThisProcess.environment(LabSupervisionLog.environmentVariable).flatMap(LabSupervisionLog.level) ?? .error
    }

    /// Bootstraps logging, passes the level to supervisors this command starts,
    /// and opens the QMP trace (exit 2 when it cannot be opened).
    func apply() throws(Reported) {
        let level = effectiveLevel
        LabSupervisionLog.bootstrap(level: level)
        if logLevel != nil || verbose { ThisProcess.setEnvironment(LabSupervisionLog.environmentVariable, level.rawValue) }
        if let traceQMP {
            let command = (["qlab"] + CommandLine.arguments.dropFirst().prefix { !$0.hasPrefix("-") }.prefix(1)).joined(separator: " ")
            do {
                QMPTracing.processTracer = try QMPTraceFile(path: traceQMP, client: "\(command) (pid \(ThisProcess.id))")
            } catch {
                reportError("qlab: \(error)")
                throw Reported(.usage)
            }
        }
    }
}

/// `--log-level`: swift-log's levels, by name (listed in --help and completion).
enum LogLevel: String, ExpressibleByArgument, CaseIterable {
    case trace, debug, info, notice, warning, error, critical

    var level: Logger.Level { Logger.Level(rawValue: rawValue) ?? .error }
}

/// A command that takes ``GlobalOptions``; the entry point applies them before it runs.
protocol UsesGlobalOptions {
    var global: GlobalOptions { get }
}

/// The qlab command line's logger (`qlab.cli`).
enum CLILog {
    static let logger = Logger(label: "qlab.cli")
}
