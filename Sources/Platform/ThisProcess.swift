#if canImport(Glibc)
import Glibc
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

