import ArgumentParser
import Foundation
import LabCore
import Platform
import QMP

/// One line on standard error (a trailing newline is added when missing).
/// Errors carry text from QEMU and guests: control characters and escape
/// sequences are shown escaped (``TerminalText``).
func reportError(_ text: String) {
    let text = TerminalText.neutralised(text)
    JSONOutputState.shared.lastError = text
    FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
}

/// Maps library errors to the exit-code table (`ExitStatus`): 2 for a bad lab
/// file or usage, 3 for a lab that is unknown or not running, 1 otherwise.
func exitCodeFor(_ error: Error) -> ExitCode {
    if error is LabFileError || error is TestMatrix.SelectionError || error is ValidationError { return ExitCode(ExitStatus.usage.rawValue) }
    if let error = error as? LabError { return ExitCode(error.exitStatus.rawValue) }
    if let error = error as? GuestScreen.ScreenError { return ExitCode(error.exitStatus.rawValue) }
    if let error = error as? TestReport.ReadError { return ExitCode(error.exitStatus.rawValue) }
    if let error = error as? OutputFileError { return ExitCode(error.exitStatus.rawValue) }
    if case QMPError.timeout = error { return ExitCode(ExitStatus.timeout.rawValue) }
    if let error = error as? GuestError, error.isTimeout { return ExitCode(ExitStatus.timeout.rawValue) }
    return ExitCode(ExitStatus.failed.rawValue)
}

/// `--json` on a command: one JSON document on stdout. When such a command
/// fails, its error goes to stderr as always and, unless it printed its
/// document already, `{"error": {"message": ..., "exit_code": N}}` goes to
/// stdout (``QLab/main()`` does that), so a script reading stdout always
/// gets a JSON document.
protocol JSONReporting {
    var json: Bool { get }
}

/// Whether the running command prints JSON, whether it did, and its last error message.
final class JSONOutputState: @unchecked Sendable {
    static let shared = JSONOutputState()
    private let lock = NSLock()
    private var _enabled = false
    private var _printed = false
    private var _lastError: String?

    var enabled: Bool {
        get { lock.withLock { _enabled } }
        set { lock.withLock { _enabled = newValue } }
    }
    var printed: Bool {
        get { lock.withLock { _printed } }
        set { lock.withLock { _printed = newValue } }
    }
    var lastError: String? {
        get { lock.withLock { _lastError } }
        set { lock.withLock { _lastError = newValue } }
    }
}

/// Prints a command's JSON document (pretty, one newline at the end).
func printJSON(_ value: JSONValue) throws {
    let text = try value.jsonString(pretty: true)
    JSONOutputState.shared.printed = true
    print(text)
}

/// Prints one compact JSON document as one line (`up --foreground --json`).
func printJSONLine(_ value: JSONValue) throws {
    let text = try value.jsonString(pretty: false)
    JSONOutputState.shared.printed = true
    print(text)
    fflush(nil)
}

/// With --json, a failed command's error object (see ``JSONReporting``).
func printJSONError(message: String, exitCode: Int32) {
    let state = JSONOutputState.shared
    guard state.enabled, !state.printed, exitCode != 0 else { return }
    var message = state.lastError ?? message
    if message.hasSuffix("\n") { message.removeLast() }
    if let text = try? JSONOutput.error(message: message, exitCode: exitCode).jsonString(pretty: true) {
        state.printed = true
        print(text)
    }
}

/// Runs `body` with file descriptor 1 pointing at stderr, so that progress
/// lines (run, nested run) do not mix into the JSON document printed after
/// it; stdout is restored afterwards, even when `body` throws.
func withStandardOutputOnStandardError<T>(_ enabled: Bool, _ body: () async throws -> T) async rethrows -> T {
    guard enabled else { return try await body() }
    fflush(nil)
    let saved = dup(1)
    guard saved >= 0 else { return try await body() }
    dup2(2, 1)
    defer {
        fflush(nil)
        dup2(saved, 1)
        close(saved)
    }
    return try await body()
}
