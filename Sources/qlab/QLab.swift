import ArgumentParser
import LabCore

#if canImport(Glibc)
import Glibc
#endif

/// The `qlab` command: subcommands only, each in its own file.
@main
struct QLab: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qlab",
        abstract: "A QEMU lab manager for testing hardware and firmware under many guest operating systems.",
        discussion: ExitStatus.table,
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
        ]
    )

    /// ArgumentParser's `main`, with two house rules: every line printed reaches
    /// a pipe when it is complete (stdout is line-buffered even when it is not a
    /// terminal), and usage errors exit 2 like every other bad input (not 64).
    static func main() async {
        StandardOutput.useLineBuffering()
        // Before parsing: a usage error of a `--json` command line is a JSON error too.
        JSONOutputState.shared.enabled = CommandLine.arguments.dropFirst().contains("--json")
        do {
            var command = try await asyncParseAsRoot(nil)
            JSONOutputState.shared.enabled = (command as? JSONReporting)?.json ?? false
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error).rawValue
            if code == EX_USAGE {
                reportError(fullMessage(for: error))
                printJSONError(message: fullMessage(for: error), exitCode: ExitStatus.usage.rawValue)
                Glibc.exit(ExitStatus.usage.rawValue)
            }
            // --json: the error object, with the message the command printed
            // on stderr (or ArgumentParser's, which exit(withError:) prints).
            if !(error is ExitCode) { JSONOutputState.shared.lastError = nil }
            printJSONError(message: fullMessage(for: error), exitCode: code)
            exit(withError: error)
        }
    }
}
