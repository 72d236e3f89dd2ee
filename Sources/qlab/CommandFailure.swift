import LabCore

/// How a command ends when it has said why already (on stderr, or in a report
/// that says a test failed): the entry point exits with the status, from the one
/// table, and prints nothing more.
struct Reported: ExitStatusCarrying {
    let exitStatus: ExitStatus

    init(_ exitStatus: ExitStatus) {
        self.exitStatus = exitStatus
    }

    /// Reports `error` as `qlab COMMAND: error`; the failure to throw carries the error's own status.
    init(_ command: String, _ error: any Error) {
        reportError("qlab \(command): \(error)")
        exitStatus = ExitStatus(for: error)
    }
}

/// A usage error found after parsing (a lab file's name where a flag was probably
/// meant, a number out of range): exit 2 with the command's usage, as the parser's own.
struct UsageError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// `qlab exec`: the guest command's own exit status, passed through as qlab's
/// (not a row of the table: the guest's program chose it).
struct GuestCommandExit: Error {
    let status: Int32
}
