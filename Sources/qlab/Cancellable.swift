import ArgumentParser
import LabCore
import Platform

/// Runs a command's work so that SIGHUP, SIGINT and SIGTERM cancel it (the
/// work stops its step, cleans up and reports; a second signal makes the
/// clean-up hurry), then exits 129/130/143 (``ExitStatus/cancelled(by:)``).
/// Afterwards the signals stay ignored: a late one cannot cut the exit short.
func runCancellable(_ command: String, _ body: @escaping @Sendable (StopRequest) async throws -> Void) async throws {
    let stop = StopRequest()
    stop.onRequest { count in
        guard let signal = stop.signal else { return }
        reportError(count == 1
            ? "qlab \(command): \(signalName(signal)): stopping and cleaning up (signal again to hurry)"
            : "qlab \(command): hurrying: killing instead of asking to quit")
    }
    let trap = SignalTrap(stop)
    defer { withExtendedLifetime(trap) {} }
    do {
        try await stop.cancelling { try await body(stop) }
    } catch {
        if let signal = stop.signal { throw cancelledExit(command, signal) }
        throw error
    }
    if let signal = stop.signal { throw cancelledExit(command, signal) }
}

private func cancelledExit(_ command: String, _ signal: Int32) -> Reported {
    reportError("qlab \(command): cancelled by \(signalName(signal))")
    return Reported(ExitStatus.cancelled(by: signal))
}
