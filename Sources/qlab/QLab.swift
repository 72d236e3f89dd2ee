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
            EventsCommand.self,
            ConsoleCommand.self,
            ExecCommand.self,
            GuestCommand.self,
            SuperviseCommand.self,
            DoctorCommand.self,
            DevicesCommand.self,
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
        ]
    )

    /// The command line without the options every command takes (``GlobalOptions``); a
    /// command with a --verbose of its own (snapshot, nested) gets that as well.
    static func parse(_ global: GlobalOptions) async throws -> ParsableCommand {
        let command = try await asyncParseAsRoot(global.remaining)
        if global.verbose, Mirror(reflecting: command).children.contains(where: { $0.label == "_verbose" }),
            let withVerbose = try? await asyncParseAsRoot(global.remainingWithVerbose)
        {
            return withVerbose
        }
        return command
    }

    /// ArgumentParser's `main`, with two house rules: every line printed reaches
    /// a pipe when it is complete (stdout is line-buffered even when it is not a
    /// terminal), and usage errors exit 2 like every other bad input (not 64).
    static func main() async {
        StandardOutput.useLineBuffering()
        // Before parsing: a usage error of a `--json` command line is a JSON error too.
        JSONOutputState.shared.enabled = CommandLine.arguments.dropFirst().contains("--json")
        let global: GlobalOptions
        do {
            global = try GlobalOptions.extract(Array(CommandLine.arguments.dropFirst()))
            try global.apply()
        } catch {
            reportError("qlab: \(error)")
            printJSONError(message: "qlab: \(error)", exitCode: ExitStatus.usage.rawValue)
            ThisProcess.exit(ExitStatus.usage.rawValue)
        }
        do {
            var command = try await parse(global)
            CLILog.logger.debug("qlab \(LabCore.version): log level \(global.effectiveLevel)\(global.traceQMP.map { ", QMP trace in \($0)" } ?? "")")
            JSONOutputState.shared.enabled = (command as? JSONReporting)?.json ?? false
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error).rawValue
            if code == ExitCode.validationFailure.rawValue {
                reportError(fullMessage(for: error))
                printJSONError(message: fullMessage(for: error), exitCode: ExitStatus.usage.rawValue)
                ThisProcess.exit(ExitStatus.usage.rawValue)
            }
            // --json: the error object, with the message the command printed
            // on stderr (or ArgumentParser's, which exit(withError:) prints).
            if !(error is ExitCode) { JSONOutputState.shared.lastError = nil }
            printJSONError(message: fullMessage(for: error), exitCode: code)
            exit(withError: error)
        }
    }
}
