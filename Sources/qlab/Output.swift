import ArgumentParser
import Foundation
import LabCore
import QMP

/// One line on standard error (a trailing newline is added when missing).
/// Errors carry text from QEMU and guests: control characters and escape
/// sequences are shown escaped (``TerminalText``).
func reportError(_ text: String) {
    let text = TerminalText.neutralised(text)
    FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
}

/// Maps library errors to the exit-code table (`ExitStatus`): 2 for a bad lab
/// file or usage, 3 for a lab that is unknown or not running, 1 otherwise.
func exitCodeFor(_ error: Error) -> ExitCode {
    if error is LabFileError || error is TestMatrix.SelectionError || error is ValidationError { return ExitCode(ExitStatus.usage.rawValue) }
    if let error = error as? LabError { return ExitCode(error.exitStatus.rawValue) }
    if case QMPError.timeout = error { return ExitCode(ExitStatus.timeout.rawValue) }
    return ExitCode(ExitStatus.failed.rawValue)
}
