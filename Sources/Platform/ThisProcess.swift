#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Facts about, and the end of, the calling process.
public enum ThisProcess {
    /// `getpid(2)`.
    public static var id: pid_t { getpid() }

    /// `getuid(2)`: the real user.
    public static var userID: uid_t { getuid() }

    /// `geteuid(2)`: the effective user (0: root).
    public static var effectiveUserID: uid_t { geteuid() }

    /// `getenv(3)`: one variable of the environment, nil when unset.
    public static func environment(_ name: String) -> String? {
        getenv(name).map { String(decoding: UnsafeRawBufferPointer(start: $0, count: strlen($0)), as: UTF8.self) }
    }

    /// `setenv(3)`: sets a variable for this process and the children it starts.
    public static func setEnvironment(_ name: String, _ value: String) {
        setenv(name, value, 1)
    }

    /// This machine's name (`gethostname(2)`); nil when it has none.
    public static var hostName: String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return nil }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? nil : name
    }

    /// Line-buffers C's `stdout` (`setvbuf(3)` with `_IOLBF`): every complete
    /// line reaches a pipe or file at once, as it does on a terminal.
    public static func lineBufferStandardOutput() {
        setvbuf(stdout, nil, _IOLBF, 0)
    }

    /// The soft limit on locked memory (`getrlimit(2)` of `RLIMIT_MEMLOCK`):
    /// `.some(nil)` when unlimited, nil when it cannot be had.
    public static var lockedMemoryLimit: UInt64?? {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(__RLIMIT_MEMLOCK.rawValue), &limit) == 0 else { return nil }
        // RLIM_INFINITY is all ones; Swift cannot import the macro.
        return .some(limit.rlim_cur == rlim_t.max ? nil : UInt64(limit.rlim_cur))
    }

    /// Runs `body` with descriptor 1 on what descriptor 2 is (`dup(2)`,
    /// `dup2(2)`; C's stdio flushed before and after), so what it prints goes
    /// to standard error; standard output is restored after, even when it throws.
    public static func withStandardOutputOnStandardError<T>(_ body: () async throws -> T) async rethrows -> T {
        fflush(nil)
        let saved = dup(1)
        guard saved >= 0 else { return try await body() }
        dup2(2, 1)
        defer {
            fflush(nil)
            dup2(saved, 1)
            close(saved)
        }
        return try await body()
    }

    /// `exit(3)`: atexit handlers run and stdio is flushed.
    public static func exit(_ status: Int32) -> Never {
        Glibc.exit(status)
    }

    /// `umask(2)`: sets the file-creation mask; returns the previous one.
    @discardableResult
    public static func setUmask(_ mask: mode_t) -> mode_t { umask(mask) }

    /// `isatty(3)`: whether `descriptor` is a terminal.
    public static func isTerminal(_ descriptor: FileDescriptor) -> Bool { isatty(descriptor.rawValue) == 1 }
}

