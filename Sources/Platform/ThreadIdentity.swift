#if canImport(Glibc)
import Glibc
#endif

/// A thread's identity (`pthread_self(3)`), compared with `pthread_equal(3)`.
/// Ask only while that thread runs: an ended thread's id may be reused.
public struct ThreadIdentity: Sendable {
    private let thread: pthread_t

    init(_ thread: pthread_t) { self.thread = thread }

    /// The calling thread.
    public static var current: ThreadIdentity { ThreadIdentity(pthread_self()) }

    /// Whether this is the calling thread.
    public var isCurrent: Bool { pthread_equal(thread, pthread_self()) != 0 }
}
