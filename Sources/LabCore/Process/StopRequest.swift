import Synchronization

/// A request to stop a command, from a signal (``SignalTrap``) or from code.
///
/// The first request cancels the work started with ``cancelling(_:)``: it
/// stops its current step and cleans up (takes its labs down, writes its
/// reports). A second request makes that clean-up hurry (``isUrgent``): no
/// graceful quit, SIGKILL at once; it still leaves nothing running.
public final class StopRequest: Sendable {
    struct State {
        var count = 0
        var signal: Int32?
        var handlers: [@Sendable (Int) -> Void] = []
    }
    private let state = Mutex(State())

    public init() {}

    /// The signal of the first request (nil when code asked, or nobody did).
    public var signal: Int32? { state.withLock { $0.signal } }
    /// True after the first request.
    public var isRequested: Bool { state.withLock { $0.count > 0 } }
    /// True after a second request: clean up without the graceful steps.
    public var isUrgent: Bool { state.withLock { $0.count > 1 } }

    /// Asks to stop; `signal` is what asked (kept from the first request).
    public func request(signal: Int32? = nil) {
        let (count, handlers) = state.withLock { s in
            s.count += 1
            if s.count == 1 { s.signal = signal }
            return (s.count, s.handlers)
        }
        for handler in handlers { handler(count) }
    }

    /// Calls `handler` with the request count (1, 2, ...) at every request,
    /// on the requester's thread; at once when requests came already.
    public func onRequest(_ handler: @escaping @Sendable (Int) -> Void) {
        let count = state.withLock { s in
            s.handlers.append(handler)
            return s.count
        }
        if count > 0 { handler(count) }
    }

    /// Runs `body` in a task that is cancelled at the first request (and when
    /// the caller's task is). Task cancellation is how the request reaches
    /// every await and poll loop in the work.
    public func cancelling<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let task = Task { try await body() }
        onRequest { _ in task.cancel() }
        return try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
    }
}

/// Runs `body` in a task that does not inherit the caller's cancellation:
/// clean-up (taking a lab down, waiting for a process) must run to its end
/// even in a cancelled task, where every `Task.sleep` would return at once.
public func shielded<T: Sendable>(_ body: @escaping @Sendable () async -> T) async -> T {
    await Task.detached { await body() }.value
}
