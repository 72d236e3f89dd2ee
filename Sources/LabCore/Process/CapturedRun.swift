#if canImport(Glibc)
import Glibc
#endif
import QMP

/// A child run to completion with stdout and stderr captured together
/// (`posix_spawn`, one pipe, `waitpid`), in its own session and process
/// group, which is killed (SIGKILL to the group) at a timeout and when the
/// calling task is cancelled, so no background child of it survives either.
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

    /// Runs `argv` (searched on PATH when argv[0] has no slash), blocking the
    /// calling thread in `poll(2)` until it ends. At most `outputLimit` bytes
    /// of output are kept.
    public static func run(
        _ argv: [String], environment: [String: String]? = nil, timeout: Duration? = nil, outputLimit: Int = 1 << 20
    ) throws(SystemCallError) -> CapturedRun {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw SystemCallError("pipe") }
        _ = fcntl(ends[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(ends[1], F_SETFD, FD_CLOEXEC)
        _ = fcntl(ends[0], F_SETFL, O_NONBLOCK)
        let child: ChildProcess
        do {
            child = try ChildProcess.spawn(
                executable: argv[0], arguments: Array(argv.dropFirst()), environment: environment, stdin: .null,
                stdout: .descriptor(ends[1]), stderr: .descriptor(ends[1]), newSession: true)
        } catch {
            close(ends[0])
            close(ends[1])
            throw error
        }
        close(ends[1])
        defer { close(ends[0]) }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        func drain() {
            while true {
                let n = read(ends[0], &buffer, buffer.count)
                if n <= 0 { return }
                if output.count < outputLimit { output += buffer[0..<min(n, outputLimit - output.count)] }
            }
        }
        let deadline = timeout.map { ContinuousClock.now + $0 }
        var exit: ProcessExit?
        var timedOut = false
        var cancelled = false
        while exit == nil {
            var poller = pollfd(fd: ends[0], events: Int16(POLLIN), revents: 0)
            _ = poll(&poller, 1, 20)
            drain()
            exit = child.poll()
            guard exit == nil else { break }
            if let deadline, ContinuousClock.now >= deadline {
                timedOut = true
            } else if Task.isCancelled {
                cancelled = true
            } else {
                continue
            }
            // The child is not reaped yet, so its pid (the group's id) is still ours.
            kill(-child.pid, SIGKILL)
            exit = child.wait()
        }
        drain()
        return CapturedRun(exit: exit, output: String(decoding: output, as: UTF8.self), timedOut: timedOut, cancelled: cancelled)
    }
}
