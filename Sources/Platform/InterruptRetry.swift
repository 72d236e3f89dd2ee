#if canImport(Glibc)
import Glibc
#endif

/// The one `EINTR` policy: a call that a signal interrupted before it did
/// anything (-1 with `errno == EINTR`) is made again; any other result is
/// returned, `errno` as the call left it. Every wrapper in Platform goes
/// through this (swift-system's own calls do the same with
/// `retryOnInterrupt: true`, their default).
///
/// Not for `close(2)`: Linux has released the descriptor even when it
/// reports `EINTR`, so a retry could close a number reused by another thread.
/// A `poll(2)` with a deadline retries through this with a closure that
/// computes the time left, so an interruption never extends the wait.
@inlinable
public func retryOnInterrupt<Result: FixedWidthInteger>(_ call: () -> Result) -> Result {
    while true {
        let result = call()
        if result == -1 && errno == EINTR { continue }
        return result
    }
}

extension Errno {
    /// The calling thread's `errno`.
    public static var current: Errno { Errno(rawValue: errno) }
}
