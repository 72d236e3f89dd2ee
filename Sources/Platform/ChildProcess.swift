#if canImport(Glibc)
import Glibc
#endif

/// How a process ended, as `waitpid(2)` reports it.
public enum ProcessExit: Sendable, Hashable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    public init(waitStatus status: Int32) {
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import.
        if status & 0x7F == 0 {
            self = .exited((status >> 8) & 0xFF)
        } else {
            self = .signaled(status & 0x7F)
        }
    }

    public var description: String {
        switch self {
        case .exited(let code): return "exited with status \(code)"
        case .signaled(let signal): return "killed by signal \(signal) (\(signalName(signal)))"
        }
    }

    public var succeeded: Bool { self == .exited(0) }
}

/// The conventional name of a signal number, e.g. SIGKILL.
public func signalName(_ signal: Int32) -> String {
    let names: [Int32: String] = [
        SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGILL: "SIGILL", SIGABRT: "SIGABRT",
        SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGSEGV: "SIGSEGV", SIGPIPE: "SIGPIPE", SIGALRM: "SIGALRM",
        SIGTERM: "SIGTERM", SIGBUS: "SIGBUS", SIGUSR1: "SIGUSR1", SIGUSR2: "SIGUSR2",
    ]
    return names[signal] ?? "signal \(signal)"
}

/// A child started with `posix_spawn(3)`.
public struct ChildProcess: Sendable {
    public let pid: pid_t

    /// What the child's standard streams are connected to.
    public enum Stream: Sendable {
        case inherit
        case null
        /// Appended to this file (created 0600 if missing).
        case appendToFile(String)
        /// This descriptor, duplicated into place.
        case descriptor(Int32)
    }

    /// Spawns `executable` with `arguments` (argv[0] included by the caller's
    /// choice of `argv0`). `keepDescriptors` stay open in the child under the
    /// same numbers; all other descriptors qlab opened are close-on-exec.
    /// `newSession` calls setsid in the child (POSIX_SPAWN_SETSID), so it
    /// survives the terminal and process group of the caller.
    public static func spawn(
        executable: String, arguments: [String], environment: [String: String]? = nil,
        stdin: Stream = .null, stdout: Stream = .inherit, stderr: Stream = .inherit,
        keepDescriptors: [Int32] = [], newSession: Bool = false
    ) throws(SystemCallError) -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (stream, target) in [(stdin, Int32(0)), (stdout, 1), (stderr, 2)] {
            switch stream {
            case .inherit: break
            case .null:
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            case .appendToFile(let path):
                posix_spawn_file_actions_addopen(&actions, target, path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
            case .descriptor(let fd):
                posix_spawn_file_actions_adddup2(&actions, fd, target)
            }
        }
        // Descriptors qlab inherited without close-on-exec (e.g. a caller's
        // pipe) must not leak into a long-lived child: it would hold the
        // caller's pipe open for as long as it runs.
        for fd in openDescriptors() where fd > 2 && !keepDescriptors.contains(fd) {
            posix_spawn_file_actions_addclose(&actions, fd)
        }
        for fd in keepDescriptors {
            FileDescriptor(rawValue: fd).setCloseOnExec(false)
        }
        defer { for fd in keepDescriptors { FileDescriptor(rawValue: fd).setCloseOnExec(true) } }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var flags: Int32 = Int32(POSIX_SPAWN_SETSIGMASK) | Int32(POSIX_SPAWN_SETSIGDEF)
        if newSession { flags |= 0x80 }  // POSIX_SPAWN_SETSID (glibc 2.26)
        posix_spawnattr_setflags(&attributes, Int16(flags))
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)

        let env = environment ?? currentEnvironment()
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = executable.contains("/")
            ? posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
            : posix_spawnp(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else { throw SystemCallError("posix_spawn \(executable)", errno: result) }
        return ChildProcess(pid: pid)
    }

    /// `waitpid(pid, 0)`: blocks until the child ends, retrying on EINTR.
    public func wait() -> ProcessExit? {
        var status: Int32 = 0
        let result = retryOnInterrupt { waitpid(pid, &status, 0) }
        return result == pid ? ProcessExit(waitStatus: status) : nil
    }

    /// `waitpid(pid, WNOHANG)`: the exit if the child has ended.
    public func poll() -> ProcessExit? {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        return result == pid ? ProcessExit(waitStatus: status) : nil
    }

    /// Waits at most `timeout` for the child; nil if it still runs (or the
    /// task is cancelled). The exit is an event: `poll(2)` on the child's pidfd
    /// (and the cancel pipe) on a detached thread, off the cooperative pool.
    public func wait(timeout: Duration) async -> ProcessExit? {
        if let exit = poll() { return exit }
        let pid = pid
        let pidfd = ProcessDescriptor.open(pid)
        guard pidfd >= 0 else { return await pollingWait(timeout: timeout) }
        defer { FileDescriptor(rawValue: pidfd).closeIgnoringErrors() }
        let deadline = ContinuousClock.now + timeout
        let waited: Void? = try? await OffPoolWait.run { cancelFD in
            var fds = PollSet([(FileDescriptor(rawValue: pidfd), .readable), (FileDescriptor(rawValue: cancelFD), .readable)])
            _ = fds.wait(until: deadline)
        }
        // The thread could not be started: wait the old way.
        if waited == nil { return await pollingWait(timeout: max(.zero, deadline - ContinuousClock.now)) }
        return poll()
    }

    /// Waits by polling `waitpid` every 5 ms: only where no pidfd can be had
    /// (a libc without `pidfd_open`, a kernel before 5.3).
    private func pollingWait(timeout: Duration) async -> ProcessExit? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline && !Task.isCancelled {
            if let exit = poll() { return exit }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return poll()
    }
}

/// This process's open descriptors, from /proc/self/fd (the directory's own
/// descriptor is closed before the list is returned).
func openDescriptors() -> [Int32] {
    guard let dir = opendir("/proc/self/fd") else { return [] }
    let own = dirfd(dir)
    var fds: [Int32] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        if let fd = Int32(name), fd != own { fds.append(fd) }
    }
    closedir(dir)
    return fds
}

/// The process's environment as a dictionary (`environ`).
public func currentEnvironment() -> [String: String] {
    var result: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
        let text = String(cString: entry)
        if let equals = text.firstIndex(of: "=") {
            result[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        pointer += 1
    }
    return result
}

/// Facts about any process by pid, from `kill(pid, 0)` and /proc.
public enum ProcessTable {
    /// True while `pid` exists (a zombie counts until reaped).
    public static func exists(_ pid: pid_t) -> Bool {
        pid > 0 && (kill(pid, 0) == 0 || errno == EPERM)
    }

    /// True when `pid` exists and is not a zombie.
    public static func isRunning(_ pid: pid_t, procfs: String = "/proc") -> Bool {
        guard exists(pid) else { return false }
        guard let stat = HostFiles.readText(procfs + "/\(pid)/stat") else { return exists(pid) }
        // Field 3, after the parenthesised command name.
        guard let close = stat.lastIndex(of: ")") else { return true }
        let state = stat[stat.index(after: close)...].split(separator: " ").first
        return state != "Z" && state != "X"
    }

    /// argv of `pid` from /proc/PID/cmdline.
    public static func commandLine(_ pid: pid_t, procfs: String = "/proc") -> [String] {
        guard let bytes = HostFiles.readBytes(procfs + "/\(pid)/cmdline") else { return [] }
        return bytes.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Waits until `pid` is gone (for processes that are not our children);
    /// stops waiting early (false) once `hurry` says so. The exit is an event
    /// (`poll(2)` on a pidfd, on a detached thread off the cooperative pool);
    /// a 50 ms tick remains only to ask `hurry`, which has no descriptor.
    /// Task cancellation does not end the wait: teardown after a signal runs
    /// in a cancelled task and still has to see the process gone.
    public static func waitGone(_ pid: pid_t, timeout: Duration, unless hurry: @escaping @Sendable () -> Bool = { false }) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        if !isRunning(pid) { return true }
        let pidfd = ProcessDescriptor.open(pid)
        if pidfd >= 0 {
            defer { FileDescriptor(rawValue: pidfd).closeIgnoringErrors() }
            let waited: Void? = try? await OffPoolWait.run { _ in
                var poller = PollSet([(FileDescriptor(rawValue: pidfd), .readable)])
                while ContinuousClock.now < deadline && !hurry() {
                    // A tick of at most 50 ms, to ask `hurry`.
                    let ready = poller.wait(until: min(deadline, ContinuousClock.now + .milliseconds(50)))
                    guard case .success(0) = ready else { return }
                }
            }
            if waited != nil { return !isRunning(pid) }
        }
        // No pidfd (older kernel or libc) or no thread: poll the process table.
        while ContinuousClock.now < deadline && !hurry() {
            if !isRunning(pid) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return !isRunning(pid)
    }
}
