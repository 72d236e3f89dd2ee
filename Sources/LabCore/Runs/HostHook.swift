import QMP
#if canImport(Glibc)
import Glibc
#endif

/// A host-side hook (`hooks.before_each`, `hooks.after_each`): a shell
/// command run with `/bin/sh -c` in the lab file's directory, with the run's
/// context in its environment, killed (its whole process group) at its timeout.
public enum HostHook {
    public struct Outcome: Sendable {
        public var exit: ProcessExit?
        public var output: String
        public var timedOut: Bool
        public var succeeded: Bool { !timedOut && exit == .exited(0) }
    }

    public static func run(_ command: String, directory: String, environment: [String: String], timeout: Duration) async throws -> Outcome {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw SystemCallError("pipe") }
        _ = fcntl(ends[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(ends[1], F_SETFD, FD_CLOEXEC)
        _ = fcntl(ends[0], F_SETFL, O_NONBLOCK)
        let script = "cd " + ShellQuoting.quote(directory) + " && " + command
        let child: ChildProcess
        do {
            child = try ChildProcess.spawn(
                executable: "/bin/sh", arguments: ["-c", script], environment: environment, stdin: .null,
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
        let deadline = ContinuousClock.now + timeout
        var exit: ProcessExit?
        var timedOut = false
        while exit == nil {
            while true {
                let n = read(ends[0], &buffer, buffer.count)
                if n <= 0 { break }
                if output.count < 1 << 20 { output += buffer[0..<n] }
            }
            exit = child.poll()
            if exit != nil { break }
            if ContinuousClock.now >= deadline {
                timedOut = true
                kill(-child.pid, SIGKILL)
                exit = child.wait()
                break
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        while true {
            let n = read(ends[0], &buffer, buffer.count)
            if n <= 0 { break }
            if output.count < 1 << 20 { output += buffer[0..<n] }
        }
        return Outcome(exit: exit, output: String(decoding: output, as: UTF8.self), timedOut: timedOut)
    }
}
