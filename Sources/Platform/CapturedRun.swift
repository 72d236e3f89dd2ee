#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A child run to completion with stdout and stderr captured together
/// (`posix_spawn`, one pipe, a pidfd, `waitpid`), in its own session and
/// process group, which is killed (SIGKILL to the group) at a timeout and when
/// the calling task is cancelled, so no background child of it survives either.
public struct CapturedRun: Sendable {
    public var exit: ProcessExit?
    public var output: String
    public var timedOut: Bool
    /// The calling task was cancelled and the group killed.
    public var cancelled = false

    public init(exit: ProcessExit?, output: String, timedOut: Bool, cancelled: Bool = false) {
        self.exit = exit
        self.output = output
        self.timedOut = timedOut
        self.cancelled = cancelled
    }

    public var succeeded: Bool { !timedOut && !cancelled && exit == .exited(0) }

    /// The exit status as a shell reports it: 128+N for signal N.
    public var shellStatus: Int32 {
        switch exit {
        case .exited(let code): return code
        case .signaled(let signal): return 128 + signal
        case nil: return 128 + SIGKILL
        }
    }

    /// Runs `argv` (searched on PATH when argv[0] has no slash) without
    /// blocking a cooperative-pool thread: a detached thread waits in `poll(2)`
    /// on the output pipe, the child's pidfd and a cancel pipe, and resumes the
    /// caller when the child ends. At most `outputLimit` bytes of output are kept.
    public static func run(
        _ argv: [String], environment: [String: String]? = nil, timeout: Duration? = nil, outputLimit: Int = 1 << 20
    ) async throws(SystemCallError) -> CapturedRun {
        let running = try Running.spawn(argv, environment: environment)
        do throws(SystemCallError) {
            return try await OffPoolWait.run { cancelFD in
                running.collect(timeout: timeout, outputLimit: outputLimit, cancelFD: cancelFD)
            }
        } catch {
            // No thread to wait on it: kill what was started so nothing outlives the call.
            running.kill()
            throw error
        }
    }

    /// The blocking form, for synchronous callers only (the planner's QEMU
    /// option probe, through ``ToolRunner``): waits on the calling thread.
    /// The pidfd makes the exit an event; the 20 ms `poll(2)` tick is kept only
    /// to notice the calling task's cancellation, which a synchronous caller
    /// cannot be told about any other way.
    /// `input` is the child's standard input (it must fit in a pipe's buffer,
    /// 64 KiB: it is written before the child is waited for); empty: /dev/null.
    public static func runBlocking(
        _ argv: [String], environment: [String: String]? = nil, input: [UInt8] = [], timeout: Duration? = nil, outputLimit: Int = 1 << 20
    ) throws(SystemCallError) -> CapturedRun {
        try Running.spawn(argv, environment: environment, input: input)
            .collect(timeout: timeout, outputLimit: outputLimit, cancelFD: -1)
    }
}

extension CapturedRun {
    /// A spawned child with the read end of its output pipe and its pidfd.
    struct Running: Sendable {
        let child: ChildProcess
        let output: Int32
        let pidfd: Int32

        static func spawn(_ argv: [String], environment: [String: String]?, input: [UInt8] = []) throws(SystemCallError) -> Running {
            let (readEnd, writeEnd) = try FileDescriptor.pipeCloseOnExec()
            readEnd.setNonBlocking()
            let ends = [readEnd.rawValue, writeEnd.rawValue]
            // The input is written whole into a pipe before the child starts (it fits
            // the pipe's buffer), and the write end closed: the child reads it, then EOF.
            var inputEnds: [Int32] = [-1, -1]
            if !input.isEmpty {
                do throws(SystemCallError) {
                    guard input.count <= 1 << 16 else { throw SystemCallError("pipe", Errno.noBufferSpace) }
                    let (inputRead, inputWrite) = try FileDescriptor.pipeCloseOnExec()
                    inputEnds = [inputRead.rawValue, inputWrite.rawValue]
                    defer { inputWrite.closeIgnoringErrors() }
                    try inputWrite.writeEvery(input, what: "the child's input pipe")
                } catch {
                    if inputEnds[0] >= 0 { FileDescriptor(rawValue: inputEnds[0]).closeIgnoringErrors() }
                    readEnd.closeIgnoringErrors()
                    writeEnd.closeIgnoringErrors()
                    throw error
                }
            }
            defer { if inputEnds[0] >= 0 { FileDescriptor(rawValue: inputEnds[0]).closeIgnoringErrors() } }
            let child: ChildProcess
            do {
                child = try ChildProcess.spawn(
                    executable: argv[0], arguments: Array(argv.dropFirst()), environment: environment,
                    stdin: inputEnds[0] >= 0 ? .descriptor(inputEnds[0]) : .null,
                    stdout: .descriptor(ends[1]), stderr: .descriptor(ends[1]), newSession: true)
            } catch {
                readEnd.closeIgnoringErrors()
                writeEnd.closeIgnoringErrors()
                throw error
            }
            writeEnd.closeIgnoringErrors()
            return Running(child: child, output: ends[0], pidfd: ProcessDescriptor.open(child.pid))
        }

        /// SIGKILL to the group and reap; closes the descriptors.
        func kill() {
            // The child is not reaped yet, so its pid (the group's id) is still ours.
            child.sendToGroup(.kill)
            _ = child.wait()
            FileDescriptor(rawValue: output).closeIgnoringErrors()
            if pidfd >= 0 { FileDescriptor(rawValue: pidfd).closeIgnoringErrors() }
        }

        /// Reads output until the child ends, the deadline passes or
        /// `cancelFD` becomes readable (-1: check `Task.isCancelled` on a tick);
        /// then reaps the child and closes the descriptors.
        func collect(timeout: Duration?, outputLimit: Int, cancelFD: Int32) -> CapturedRun {
            defer {
                FileDescriptor(rawValue: output).closeIgnoringErrors()
                if pidfd >= 0 { FileDescriptor(rawValue: pidfd).closeIgnoringErrors() }
            }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            /// Reads what is there; false at end of file.
            func drain() -> Bool {
                while true {
                    switch buffer.withUnsafeMutableBytes({ FileDescriptor(rawValue: output).readSome(into: $0) }) {
                    case .success(0): return false
                    case .success(let n): if bytes.count < outputLimit { bytes += buffer[0..<min(n, outputLimit - bytes.count)] }
                    case .failure(let error): return error.isWouldBlock
                    }
                }
            }
            let deadline = timeout.map { ContinuousClock.now + $0 }
            // Without a pidfd, or with no cancel pipe, the exit or a cancel is noticed on a tick.
            let tick: Int32? = (pidfd < 0 || cancelFD < 0) ? 20 : nil
            var fds = [
                pollfd(fd: output, events: Int16(POLLIN), revents: 0),
                pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0),
                pollfd(fd: cancelFD, events: Int16(POLLIN), revents: 0),
            ]
            var exit: ProcessExit?
            var timedOut = false
            var cancelled = false
            while exit == nil {
                var wait: Int32 = tick ?? -1
                if let deadline {
                    let left = OffPoolWait.milliseconds(deadline - ContinuousClock.now)
                    wait = wait < 0 ? left : min(wait, left)
                }
                _ = poll(&fds, nfds_t(fds.count), wait)  // EINTR: the loop recomputes the wait
                // At end of file stop watching the pipe (it would stay readable).
                if fds[0].fd >= 0, fds[0].revents != 0, !drain() { fds[0].fd = -1 }
                exit = child.poll()
                guard exit == nil else { break }
                if let deadline, ContinuousClock.now >= deadline {
                    timedOut = true
                } else if fds[2].fd >= 0 && fds[2].revents != 0 || cancelFD < 0 && Task.isCancelled {
                    cancelled = true
                } else {
                    continue
                }
                // The child is not reaped yet, so its pid (the group's id) is still ours.
                child.sendToGroup(.kill)
                exit = child.wait()
            }
            if fds[0].fd >= 0 { _ = drain() }
            return CapturedRun(exit: exit, output: String(decoding: bytes, as: UTF8.self), timedOut: timedOut, cancelled: cancelled)
        }
    }
}
