#if canImport(Glibc)
import Glibc
#endif

/// A signal number (`<signal.h>`), by name.
public struct Signal: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let kill = Signal(rawValue: SIGKILL)
    public static let terminate = Signal(rawValue: SIGTERM)
    public static let interrupt = Signal(rawValue: SIGINT)
    public static let hangUp = Signal(rawValue: SIGHUP)
    public static let pipe = Signal(rawValue: SIGPIPE)

    /// `signal(2)` with `SIG_IGN`: this process ignores the signal from now on
    /// (children spawned by ``ChildProcess`` get the default back).
    public func ignore() {
        _ = Glibc.signal(rawValue, SIG_IGN)
    }

    /// `signal(2)` with `SIG_DFL`: the default disposition again.
    public func restoreDefault() {
        _ = Glibc.signal(rawValue, SIG_DFL)
    }

    public var description: String { signalName(rawValue) }
}

extension ChildProcess {
    /// `kill(2)` of this child. Safe until it is reaped: an unreaped child's
    /// pid cannot have been reused.
    public func send(_ signal: Signal) {
        _ = Glibc.kill(pid, signal.rawValue)
    }

    /// `kill(-pid)`: the signal to the child's whole process group (a child
    /// spawned with `newSession` leads its own).
    public func sendToGroup(_ signal: Signal) {
        _ = Glibc.kill(-pid, signal.rawValue)
    }

    /// Reaps the child (`waitpid(2)`, blocking) on a detached thread, off
    /// the cooperative pool: for a child that was told to end and will, but
    /// may take seconds (a QEMU with a large guest or a vfio card). Not
    /// ended by task cancellation: the child must be reaped either way.
    public func reap() async -> ProcessExit? {
        let child = self
        if let exit = poll() { return exit }
        if let exit = try? await OffPoolWait.run({ _ in child.wait() }) { return exit }
        // No thread to be had: reap here, as before.
        return wait()
    }

    /// Reaps the child whenever it ends (`waitpid(2)`, blocking, on a detached thread of its
    /// own), for a child left running that nobody waits for (a lab's supervisor outlives the
    /// `up` that spawned it): it is no zombie for as long as this process lives. Without a
    /// thread it stays one until this process exits, as an unreaped child does.
    public func reapWhenEnded() {
        let child = self
        _ = try? DetachedThread.start(stackSize: 64 << 10) { _ = child.wait() }
    }

    /// SIGKILL, then ``reap()``.
    public func killAndReap() async -> ProcessExit? {
        send(.kill)
        return await reap()
    }
}

extension ProcessTable {
    /// `kill(2)` of `pid`, which the caller has verified is ours (a child,
    /// or a pid whose start time matches the record); false when it failed.
    @discardableResult
    public static func send(_ signal: Signal, to pid: pid_t) -> Bool {
        Glibc.kill(pid, signal.rawValue) == 0
    }
}
