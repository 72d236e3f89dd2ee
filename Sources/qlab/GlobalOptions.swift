import ArgumentParser
import LabCore
import Logging
import Platform
import QMP


/// Options every command takes, read in one place before ArgumentParser sees
/// the command line: `--trace-qmp FILE` (every QMP message this command sends
/// and receives, as JSON Lines), `-v`/`--verbose` (log level `debug`) and
/// `--log-level LEVEL` (`trace` ... `critical`). Logs go to stderr, through
/// swift-log, one logger per module (qlab.cli, qlab.labcore, qlab.supervision,
/// qlab.qmp); without these options only errors are logged, which qlab prints
/// itself anyway: quiet. Everything after `--` belongs to the command (`exec`).
struct GlobalOptions {
    var traceQMP: String?
    var logLevel: Logger.Level?
    var verbose = false
    /// The command line without these options.
    var remaining: [String] = []
    /// The same with `-v`/`--verbose` left in: for commands with a `--verbose` of their own (snapshot, nested).
    var remainingWithVerbose: [String] = []

    static let help = "Every command also takes --trace-qmp FILE (its QMP messages in and out, JSON Lines), -v/--verbose and --log-level trace|debug|info|notice|warning|error|critical (logs on stderr)."

    enum Refusal: Error, CustomStringConvertible {
        case missingValue(String)
        case badLevel(String)
        var description: String {
            switch self {
            case .missingValue(let option): return "\(option) needs a value"
            case .badLevel(let text): return "--log-level \(text): use trace, debug, info, notice, warning, error or critical"
            }
        }
    }

    static func extract(_ arguments: [String]) throws(Refusal) -> GlobalOptions {
        var options = GlobalOptions()
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--" {
                options.remaining += arguments[index...]
                options.remainingWithVerbose += arguments[index...]
                break
            }
            func value(_ option: String) throws(Refusal) -> String {
                if argument.hasPrefix(option + "=") { return String(argument.dropFirst(option.count + 1)) }
                index += 1
                guard index < arguments.count else { throw .missingValue(option) }
                return arguments[index]
            }
            if argument == "--trace-qmp" || argument.hasPrefix("--trace-qmp=") {
                options.traceQMP = try value("--trace-qmp")
            } else if argument == "--log-level" || argument.hasPrefix("--log-level=") {
                let text = try value("--log-level")
                guard let level = LabSupervisionLog.level(text) else { throw .badLevel(text) }
                options.logLevel = level
            } else if argument == "-v" || argument == "--verbose" {
                options.verbose = true
                options.remainingWithVerbose.append(argument)
            } else {
                options.remaining.append(argument)
                options.remainingWithVerbose.append(argument)
            }
            index += 1
        }
        return options
    }

    /// The level in force: `--log-level`, else `debug` with -v, else what a parent
    /// qlab passed down (QLAB_LOG_LEVEL), else errors only.
    var effectiveLevel: Logger.Level {
        if let logLevel { return logLevel }
        if verbose { return .debug }
        return ThisProcess.environment(LabSupervisionLog.environmentVariable).flatMap(LabSupervisionLog.level) ?? .error
    }

    /// Bootstraps logging, passes the level to supervisors this command starts,
    /// and opens the QMP trace (exit 2 when it cannot be opened).
    func apply() throws(SystemCallError) {
        let level = effectiveLevel
        LabSupervisionLog.bootstrap(level: level)
        if logLevel != nil || verbose { ThisProcess.setEnvironment(LabSupervisionLog.environmentVariable, level.rawValue) }
        if let traceQMP {
            let command = (["qlab"] + remaining.prefix { !$0.hasPrefix("-") }.prefix(1)).joined(separator: " ")
            QMPTracing.processTracer = try QMPTraceFile(path: traceQMP, client: "\(command) (pid \(ThisProcess.id))")
        }
    }
}

/// The qlab command line's logger (`qlab.cli`).
enum CLILog {
    static let logger = Logger(label: "qlab.cli")
}
