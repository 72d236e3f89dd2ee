import Dispatch
import Platform

/// SIGHUP, SIGINT and SIGTERM turned into ``StopRequest`` requests, so that a
/// command stops its work, cleans up and reports instead of dying where it is.
///
/// `signal(2)` sets the signals to SIG_IGN (so none ends the process where
/// it is) and a `DispatchSourceSignal` per signal delivers them to a private
/// serial queue, where ordinary code runs, not a signal handler. Children
/// started with ``ChildProcess/spawn`` get the default dispositions back
/// (POSIX_SPAWN_SETSIGDEF).
public final class SignalTrap: @unchecked Sendable {
    /// The signals that cancel a command, as a shell or CI system sends them.
    public static let cancelSignals: [Int32] = [Signal.hangUp, .interrupt, .terminate].map(\.rawValue)

    public let stop: StopRequest
    // Written once in init; the sources live as long as the trap.
    private var sources: [DispatchSourceSignal] = []
    private let queue = DispatchQueue(label: "qlab.signal-trap")

    public init(_ stop: StopRequest = StopRequest(), signals: [Int32] = SignalTrap.cancelSignals) {
        self.stop = stop
        for number in signals {
            Signal(rawValue: number).ignore()
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { [stop] in stop.request(signal: number) }
            source.resume()
            sources.append(source)
        }
    }

    /// Back to the default dispositions (a later signal ends the process).
    public func remove() {
        for source in sources {
            source.cancel()
            Signal(rawValue: Int32(source.handle)).restoreDefault()
        }
        sources = []
    }
}
