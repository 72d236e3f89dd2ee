import ArgumentParser
import LabCore
import Platform

/// The `qlab` command: subcommands only, each in its own file.
@main
struct QLab: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qlab",
        abstract: "A QEMU lab manager for testing hardware and firmware under many guest operating systems.",
        discussion: ExitStatus.table + "\n\n" + GlobalOptions.help,
        version: LabCore.version,
        subcommands: [
            UpCommand.self,
            DownCommand.self,
            RemoveCommand.self,
            StatusCommand.self,
            ListCommand.self,
            RunCommand.self,
            ReportCommand.self,
            QMPCommand.self,
            HMPCommand.self,
            EventsCommand.self,
            ConsoleCommand.self,
            ExecCommand.self,
            GuestCommand.self,
            SuperviseCommand.self,
            DoctorCommand.self,
            DevicesCommand.self,
            CardsCommand.self,
            HealthCommand.self,
            VFIOCommand.self,
            ArgsCommand.self,
            DiagnoseCommand.self,
            HotplugCommand.self,
            UnplugCommand.self,
            SnapshotCommand.self,
            ResetCommand.self,
            NestedCommand.self,
            ScreenshotCommand.self,
            ScreenCommand.self,
            KeysCommand.self,
        ]
    )

    /// ArgumentParser's entry point (parse, validate, run), with the house rules
    /// it has no hook for: every line printed reaches a pipe when it is complete
    /// (stdout is line-buffered even when it is not a terminal); a usage error
    /// exits 2 like every other bad input (the library's is 64); every other
    /// error is mapped to the one exit-code table once, here (``ExitStatus/init(for:)``);
    /// with `--json`, a failure also prints the error document on stdout.
    nonisolated static func main() async {
        StandardOutput.useLineBuffering()
        // Before parsing: a usage error of a `--json` command line is a JSON error too.
        JSONOutputState.shared.enabled = CommandLine.arguments.dropFirst().contains("--json")
        let command: ParsableCommand
        do {
            command = try await asyncParseAsRoot(WaitArgument.normalized(Array(CommandLine.arguments.dropFirst()), root: QLab.self))
        } catch {
            exitForParsing(error)
        }
        let status = await execute(command)
        ThisProcess.exit(status)
    }

    /// Help and version go to stdout (exit 0); a usage error to stderr with the
    /// command's usage, and the flag that was probably meant (exit 2).
    static func exitForParsing(_ error: any Error) -> Never {
        guard exitCode(for: error) != .success else { exit(withError: error) }
        let message = fullMessage(for: error) + probablyMeant(fullMessage(for: error), arguments: Array(CommandLine.arguments.dropFirst()))
        reportError(message)
        printJSONError(message: message, exitCode: ExitStatus.usage.rawValue)
        ThisProcess.exit(ExitStatus.usage.rawValue)
    }

    /// `run --json out.json`: a flag given a value, where the command has an
    /// option named like it (`--json-report FILE`).
    static func probablyMeant(_ message: String, arguments: [String]) -> String {
        let help = helpMessage(for: subcommand(named: arguments))
        for (index, argument) in arguments.enumerated().dropLast() where argument.hasPrefix("--") && !argument.contains("=") {
            let value = arguments[index + 1]
            guard message.contains("Unexpected argument '\(value)'"), !value.hasPrefix("-"),
                let range = help.range(of: argument + "-")
            else { continue }
            let option = help[range.lowerBound...].prefix { !$0.isWhitespace && $0 != "," }
            return "\nHelp:  \(argument) takes no value; did you mean \(option) \(value)?"
        }
        return ""
    }

    /// The (sub)command the words of a command line name: `report merge ...` -> ``ReportCommand/Merge``.
    static func subcommand(named arguments: [String]) -> ParsableCommand.Type {
        var command: ParsableCommand.Type = QLab.self
        for word in arguments where !word.hasPrefix("-") {
            guard let next = command.configuration.subcommands.first(where: { $0._commandName == word }) else { break }
            command = next
        }
        return command
    }

    /// Runs `command` and returns its exit status: 0, the guest command's own
    /// (`exec`), or the table's row for the error it ended with.
    static func execute(_ command: sending ParsableCommand) async -> Int32 {
        var command = command
        JSONOutputState.shared.enabled = (command as? JSONReporting)?.json ?? false
        do {
            if let global = (command as? UsesGlobalOptions)?.global {
                try global.apply()
                CLILog.logger.debug("qlab \(LabCore.version): log level \(global.effectiveLevel)\(global.traceQMP.map { ", QMP trace in \($0)" } ?? "")")
            }
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            return ExitStatus.success.rawValue
        } catch let exit as GuestCommandExit {
            return exit.status
        } catch let error as ValidationError {
            // Found in run(): the command's usage, as for the parser's own errors.
            let message = "Error: \(error)\nUsage: " + usageString(for: type(of: command))
            reportError(message)
            printJSONError(message: message, exitCode: ExitStatus.usage.rawValue)
            return ExitStatus.usage.rawValue
        } catch {
            // The built-in `help` command ends by asking ArgumentParser to print the help.
            if exitCode(for: error) == .success { exit(withError: error) }
            if !(error is Reported) { reportError("qlab \(type(of: command)._commandName): \(error)") }
            let status = ExitStatus(for: error).rawValue
            printJSONError(message: "\(error)", exitCode: status)
            return status
        }
    }
}
