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
        do {
            var command = try await asyncParseAsRoot(nil)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            if exitCode(for: error).rawValue == EX_USAGE {
                reportError(fullMessage(for: error))
                Glibc.exit(ExitStatus.usage.rawValue)
            }
            exit(withError: error)
        }
    }
}
