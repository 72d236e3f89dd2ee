#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Runs a blocking wait (a `poll(2)` on descriptors) on a detached thread and
/// resumes the awaiting task with its result, so no cooperative-pool thread is
/// held while it waits. The body gets a descriptor that becomes readable when
/// the awaiting task is cancelled; it should poll it with its own descriptors.
package enum OffPoolWait {
    package static func run<T: Sendable>(_ body: @escaping @Sendable (_ cancelFD: Int32) -> T) async throws(SystemCallError) -> T {
        let cancel = try CancelSignal()
        let result: Result<T, SystemCallError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                do throws(SystemCallError) {
                    try DetachedThread.start {
                        let value = body(cancel.readFD)
                        cancel.close()
                        continuation.resume(returning: .success(value))
                    }
                } catch {
                    cancel.close()
                    continuation.resume(returning: .failure(error))
                }
            }
        } onCancel: {
            cancel.signal()
        }
        return try result.get()
    }

    /// A poll(2) timeout for `duration`, rounded up to whole milliseconds, at least 0.
    package static func milliseconds(_ duration: Duration) -> Int32 {
        let (seconds, attoseconds) = duration.components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return 0 }
        let ms = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(min(ms, Int64(Int32.max)))
    }

    /// A pipe the cancellation handler writes one byte to, so the waiting
    /// thread wakes from `poll(2)`. Closed once, under a lock, so a late
    /// cancel never writes to a descriptor number reused by someone else.
    final class CancelSignal: Sendable {
        let readFD: Int32
        private let writeFD: Int32
        private let closed = Mutex(false)

        init() throws(SystemCallError) {
            let ends = try FileDescriptor.pipeCloseOnExec(nonBlocking: true)
            readFD = ends.readEnd.rawValue
            writeFD = ends.writeEnd.rawValue
        }

        func signal() {
            closed.withLock { closed in
                guard !closed else { return }
                var byte: UInt8 = 1
                _ = write(writeFD, &byte, 1)
            }
        }

        func close() {
            closed.withLock { closed in
                guard !closed else { return }
                closed = true
                FileDescriptor(rawValue: readFD).closeIgnoringErrors()
                FileDescriptor(rawValue: writeFD).closeIgnoringErrors()
            }
        }
    }
}
