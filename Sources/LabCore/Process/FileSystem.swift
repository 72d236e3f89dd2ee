#if canImport(Glibc)
import Glibc
#endif
import QMP

/// The few file operations lab state needs, as thin wrappers over the calls.
public enum FileSystem {
    /// `mkdir(2)` for each missing component; the last gets `mode`
    /// (then `chmod(2)`, so the umask cannot widen or narrow it).
    public static func makeDirectory(_ path: String, mode: mode_t = 0o700) throws(SystemCallError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, prefix == path ? mode : 0o755) != 0 && errno != EEXIST {
                throw SystemCallError("mkdir \(prefix)")
            }
        }
        guard chmod(path, mode) == 0 else { throw SystemCallError("chmod \(path)") }
    }

    /// Writes `bytes` to a temp file beside `path`, fsyncs, and `rename(2)`s
    /// it into place: readers see the old or the new file, never half of one.
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o600) throws(SystemCallError) {
        let temp = path + ".tmp-\(getpid())"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SystemCallError("open \(temp)") }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                let error = SystemCallError("write \(temp)")
                close(fd)
                unlink(temp)
                throw error
            }
            offset += n
        }
        fsync(fd)
        close(fd)
        guard rename(temp, path) == 0 else {
            let error = SystemCallError("rename \(temp)")
            unlink(temp)
            throw error
        }
    }

    public static func writeJSON(_ path: String, _ value: JSONValue) throws {
        var bytes = try value.serialized(pretty: true)
        bytes.append(0x0A)
        try writeAtomically(path, bytes)
    }

    public static func readJSON(_ path: String) -> JSONValue? {
        guard let bytes = HostFiles.readBytes(path, limit: 16 << 20) else { return nil }
        return try? JSONValue.parse(bytes)
    }

    /// Appends one line with `O_APPEND` (atomic for lines under PIPE_BUF between writers).
    public static func appendLine(_ path: String, _ line: String) throws(SystemCallError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemCallError("open \(path)") }
        defer { close(fd) }
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    public static func remove(_ path: String) {
        unlink(path)
    }

    /// Size in bytes, or nil when missing.
    public static func size(_ path: String) -> Int? {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : nil
    }

    /// The absolute form of `path`, against the working directory.
    public static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        return String(cString: buffer) + "/" + path
    }
}

/// An exclusive `flock(2)` on a lock file, so two qlab commands do not
/// change one lab at once. Released when the value is released or the process dies.
public final class FileLock: Sendable {
    public let path: String
    private let fd: Int32

    /// Takes the lock, waiting at most `timeout`; throws when another holder keeps it.
    ///
    /// The lock file may be removed by its holder (``removeFile()``), so after
    /// locking, the path must still name the locked inode; else retry.
    public init(path: String, timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SystemCallError("open \(path)") }
            if flock(fd, LOCK_EX | LOCK_NB) == 0 {
                var held = stat()
                var named = stat()
                if fstat(fd, &held) == 0, stat(path, &named) == 0, held.st_ino == named.st_ino, held.st_dev == named.st_dev {
                    self.path = path
                    self.fd = fd
                    return
                }
                close(fd)
                continue
            }
            let error = errno
            close(fd)
            guard error == EWOULDBLOCK || error == EINTR, ContinuousClock.now < deadline else {
                throw LabError.busy(path)
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Unlinks the lock file while holding it: waiters then retry on a new file.
    public func removeFile() {
        unlink(path)
    }

    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
