import Platform
import Synchronization

/// The task executor of a ``ByteStreamChannel``'s reader thread (under every ``MessageChannel``).
///
/// The reader runs the jobs enqueued here between polls of its socket. A
/// task that prefers this executor (``QMPClient/withPreferredExecutor(isolation:_:)``,
/// `withTaskExecutorPreference`, `Task(executorPreference:)`) runs its
/// nonisolated code on the reader thread; a reply then resumes it on the
/// thread that read the reply, with no second thread to wake. For a
/// sequential caller that saves a thread switch and about a third of the
/// client's CPU time per round trip (qlab-bench qmp: qlab vs qlab-pool).
///
/// A job enqueued by the reader thread itself (a reply resuming a task)
/// needs no wake-up; one from another thread wakes the reader's `poll(2)`
/// through a self-pipe, written only while the reader sleeps. Before the
/// reader starts and once it has stopped, jobs go to the global concurrent
/// executor: none is lost, none waits for a thread that has exited.
///
/// A job that blocks its thread blocks reading too: code that prefers this
/// executor should await, not wait synchronously (no semaphores, no
/// blocking I/O of its own).
public final class ReaderThreadExecutor: TaskExecutor, Sendable {
    struct State {
        var jobs: [UnownedJob] = []
        /// The reader thread runs jobs; otherwise they go to the global executor.
        var accepting = false
        /// Set by the reader thread itself in `open()`.
        var readerThread: ThreadIdentity?
        /// The reader is in, or about to enter, a blocking `poll(2)`.
        var sleeping = false
        /// `wake()` came while the reader was awake: its next poll must not block.
        var wakeRequested = false
    }

    private let state = Mutex<State>(State())
    /// The self-pipe's read end, polled by the reader next to its socket.
    let wakeReadFD: FileDescriptor
    private let wakeWriteFD: FileDescriptor

    /// Creates the self-pipe with `pipe2(2)`: non-blocking, close-on-exec.
    init() throws(SystemCallError) {
        (wakeReadFD, wakeWriteFD) = try FileDescriptor.pipeCloseOnExec(nonBlocking: true)
    }

    deinit {
        wakeReadFD.closeIgnoringErrors()
        wakeWriteFD.closeIgnoringErrors()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let (accepted, mustWake) = state.withLock { s -> (Bool, Bool) in
            guard s.accepting else { return (false, false) }
            s.jobs.append(job)
            defer { s.sleeping = false }
            return (true, s.sleeping)
        }
        if !accepted {
            globalConcurrentExecutor.enqueue(ExecutorJob(job))
        } else if mustWake {
            writeWakeByte()
        }
    }

    /// Makes the reader's current or next poll return at once (it then
    /// re-reads its deadlines).
    func wake() {
        let mustWake = state.withLock { s -> Bool in
            if s.sleeping {
                s.sleeping = false
                return true
            }
            s.wakeRequested = true
            return false
        }
        if mustWake { writeWakeByte() }
    }

    private func writeWakeByte() {
        var one: UInt8 = 1
        _ = withUnsafeBytes(of: &one) { wakeWriteFD.writeSome($0) }  // EAGAIN: the pipe is full, so a wake is pending anyway
    }

    // MARK: Reader side (called on the reader thread only)

    /// True when called on the reader thread while it runs jobs (in a task
    /// that prefers this executor, between its suspensions).
    public var isCurrentThread: Bool {
        state.withLock { s in
            // After the reader ends its id may belong to a new thread: ask only while it runs.
            s.accepting && s.readerThread?.isCurrent == true
        }
    }

    /// The reader (the calling thread) starts taking jobs.
    func open() {
        state.withLock { s in
            s.readerThread = .current
            s.accepting = true
        }
    }

    /// Runs the jobs queued so far. Jobs they enqueue wait for the next
    /// turn, after the socket has been polled, so a task that keeps
    /// yielding cannot starve reading (or a close waiting for the reader).
    /// `spare` is an empty array kept between calls so this allocates nothing.
    func runJobs(spare: inout [UnownedJob]) {
        state.withLock { s in swap(&s.jobs, &spare) }
        if spare.isEmpty { return }
        let me = asUnownedTaskExecutor()
        for job in spare { job.runSynchronously(on: me) }
        spare.removeAll(keepingCapacity: true)
    }

    /// Whether the reader may block in poll: not when jobs are queued or a
    /// wake was asked for. When it may, enqueuers from now on write the pipe.
    func prepareToSleep() -> Bool {
        state.withLock { s in
            if !s.jobs.isEmpty || s.wakeRequested {
                s.wakeRequested = false
                return false
            }
            s.sleeping = true
            return true
        }
    }

    /// The reader is back from poll; `pipeReadable` drains the wake bytes.
    func awoke(pipeReadable: Bool) {
        state.withLock { $0.sleeping = false }
        if pipeReadable {
            var drain = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
            while withUnsafeMutableBytes(of: &drain, { wakeReadFD.readSome(into: $0) }) == .success(32) {}
        }
    }

    /// The reader stops: queued and future jobs go to the global executor.
    func shutDown() {
        let leftover = state.withLock { s -> [UnownedJob] in
            s.accepting = false
            s.sleeping = false
            defer { s.jobs = [] }
            return s.jobs
        }
        for job in leftover { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }
}
