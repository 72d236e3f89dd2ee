import ArgumentParser
import Foundation
import LabCore

/// One line on standard error (a trailing newline is added when missing).
/// Errors carry text from QEMU and guests: control characters and escape
/// sequences are shown escaped (``TerminalText``).
func reportError(_ text: String) {
    let text = TerminalText.neutralised(text)
    FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
}

/// Maps library errors to the documented exit codes: 2 for a bad lab file
/// or usage, 1 for everything else.
func exitCodeFor(_ error: Error) -> ExitCode {
    if error is LabFileError || error is TestMatrix.SelectionError { return ExitCode(2) }
    return ExitCode(1)
}
