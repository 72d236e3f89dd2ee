#if canImport(Glibc)
import Glibc
#endif

/// A detached thread for work that must block (a `poll(2)` on a child's
/// descriptors) without holding a cooperative-pool thread: `pthread_create(3)`.
package enum DetachedThread {
    private final class Box: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    /// Starts `body` on a new detached thread; `stackSize` bytes of stack
    /// when given (a reader converting deep JSON recurses). Returns the
    /// thread's identity, valid while it runs.
    @discardableResult
    package static func start(stackSize: Int? = nil, _ body: @escaping @Sendable () -> Void) throws(SystemCallError) -> ThreadIdentity {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        if let stackSize { pthread_attr_setstacksize(&attributes, stackSize) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, &attributes, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, box)
        if result != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw SystemCallError("pthread_create", errno: result)
        }
        return ThreadIdentity(thread)
    }
}
