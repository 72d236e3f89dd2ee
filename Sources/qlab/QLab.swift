import ArgumentParser
import LabCore

/// The `qlab` command: subcommands only, each in its own file.
struct QLab: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qlab",
        abstract: "A QEMU lab manager for testing hardware and firmware under many guest operating systems.",
        version: LabCore.version,
        subcommands: [
            QMPCommand.self,
        ]
    )
}
