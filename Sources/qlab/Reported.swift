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
