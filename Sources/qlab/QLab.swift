import ArgumentParser
import LabCore

/// The `qlab` command: subcommands only, each in its own file.
@main
struct QLab: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qlab",
        abstract: "A QEMU lab manager for testing hardware and firmware under many guest operating systems.",
        version: LabCore.version,
        subcommands: [
            UpCommand.self,
            DownCommand.self,
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
}
