#if canImport(Glibc)
import Glibc
#endif
import Platform
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
            var ends: [Int32] = [-1, -1]
            guard pipe(&ends) == 0 else { throw SystemCallError("pipe") }
            _ = fcntl(ends[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(ends[1], F_SETFD, FD_CLOEXEC)
            _ = fcntl(ends[0], F_SETFL, O_NONBLOCK)
            // The input is written whole into a pipe before the child starts (it fits
            // the pipe's buffer), and the write end closed: the child reads it, then EOF.
            var inputEnds: [Int32] = [-1, -1]
            if !input.isEmpty {
                guard input.count <= 1 << 16, pipe(&inputEnds) == 0 else {
                    Glibc.close(ends[0])
                    Glibc.close(ends[1])
                    throw SystemCallError("pipe")
                }
                _ = fcntl(inputEnds[0], F_SETFD, FD_CLOEXEC)
                _ = fcntl(inputEnds[1], F_SETFD, FD_CLOEXEC)
                let written = input.withUnsafeBytes { write(inputEnds[1], $0.baseAddress, $0.count) }
                Glibc.close(inputEnds[1])
                guard written == input.count else {
                    Glibc.close(inputEnds[0])
                    Glibc.close(ends[0])
                    Glibc.close(ends[1])
                    throw SystemCallError("write")
                }
            }
            defer { if inputEnds[0] >= 0 { Glibc.close(inputEnds[0]) } }
            let child: ChildProcess
            do {
                child = try ChildProcess.spawn(
                    executable: argv[0], arguments: Array(argv.dropFirst()), environment: environment,
                    stdin: inputEnds[0] >= 0 ? .descriptor(inputEnds[0]) : .null,
                    stdout: .descriptor(ends[1]), stderr: .descriptor(ends[1]), newSession: true)
            } catch {
                Glibc.close(ends[0])
                Glibc.close(ends[1])
                throw error
            }
            Glibc.close(ends[1])
            return Running(child: child, output: ends[0], pidfd: ProcessDescriptor.open(child.pid))
        }

        /// SIGKILL to the group and reap; closes the descriptors.
        func kill() {
            // The child is not reaped yet, so its pid (the group's id) is still ours.
            Glibc.kill(-child.pid, SIGKILL)
            _ = child.wait()
            Glibc.close(output)
            if pidfd >= 0 { Glibc.close(pidfd) }
        }

        /// Reads output until the child ends, the deadline passes or
        /// `cancelFD` becomes readable (-1: check `Task.isCancelled` on a tick);
        /// then reaps the child and closes the descriptors.
        func collect(timeout: Duration?, outputLimit: Int, cancelFD: Int32) -> CapturedRun {
            defer {
                Glibc.close(output)
                if pidfd >= 0 { Glibc.close(pidfd) }
            }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            /// Reads what is there; false at end of file.
            func drain() -> Bool {
                while true {
                    let n = read(output, &buffer, buffer.count)
                    if n == 0 { return false }
                    if n < 0 { return errno == EAGAIN || errno == EINTR }
                    if bytes.count < outputLimit { bytes += buffer[0..<min(n, outputLimit - bytes.count)] }
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
                _ = poll(&fds, nfds_t(fds.count), wait)
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
                Glibc.kill(-child.pid, SIGKILL)
                exit = child.wait()
            }
            if fds[0].fd >= 0 { _ = drain() }
            return CapturedRun(exit: exit, output: String(decoding: bytes, as: UTF8.self), timedOut: timedOut, cancelled: cancelled)
        }
    }
}
