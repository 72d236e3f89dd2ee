#if canImport(Glibc)
import Glibc
#endif

/// The few file operations lab state needs, as thin wrappers over the calls.
public enum FileSystem {
    /// `mkdir(2)` for each missing component; a directory made here gets
    /// `mode` (then `chmod(2)`, so the umask cannot narrow it). An existing
    /// directory is left as it is: qlab never changes the mode of a directory
    /// it did not create (one it cannot use is reported when used).
    /// qlab's runtime and state directories go through ``PrivateDirectory``.
    public static func makeDirectory(_ path: String, mode: mode_t = 0o700) throws(SystemCallError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        let components = path.split(separator: "/")
        for (index, component) in components.enumerated() {
            prefix += "/" + component
            let last = index == components.count - 1
            if mkdir(prefix, last ? mode : 0o755) == 0 {
                if last { guard chmod(prefix, mode) == 0 else { throw SystemCallError("chmod \(prefix)") } }
            } else if errno != EEXIST {
                throw SystemCallError("mkdir \(prefix)")
            }
        }
    }

    /// Replaces `path` atomically: a new file under an unpredictable name in
    /// the same directory, `fsync(2)`, `rename(2)`. Readers see the old or the
    /// new file, never half of one, and a link planted at any name is never followed.
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o600) throws(SystemCallError) {
        let directory = Paths.directory(of: path)
        let fd = open(directory, O_PATH | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError("open \(directory)") }
        defer { close(fd) }
        try writeAtomically(in: fd, name: Paths.baseName(path), shownAs: path, bytes, mode: mode)
    }

    /// The atomic write relative to a directory descriptor: `openat(2)` of
    /// `.NAME.tmp-RANDOM` with `O_CREAT|O_EXCL|O_NOFOLLOW` (so nothing there
    /// already, link or file, is reused), `write(2)`, `fsync(2)`, `renameat(2)`
    /// (which replaces a link at `name`, never what it points to).
    ///
    /// Not `durable`: no `fsync(2)`. The rename still makes the write atomic
    /// for readers; only a crash of the machine could leave the old contents
    /// or an empty file. Right for files in the runtime dir, which do not
    /// outlive a reboot anyway (the record and launch spec of a running lab).
    package static func writeAtomically(
        in directory: Int32, name: String, shownAs path: String, _ bytes: [UInt8], mode: mode_t, durable: Bool = true
    ) throws(SystemCallError) {
        let temp = RandomName.temporary(for: name)
        let fd = openat(directory, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SystemCallError("create a temporary file beside \(path)") }
        do throws(SystemCallError) {
            try FileDescriptor(rawValue: fd).writeEvery(bytes, what: path)
        } catch {
            close(fd)
            unlinkat(directory, temp, 0)
            throw error
        }
        if durable { fsync(fd) }
        close(fd)
        guard renameat(directory, temp, directory, name) == 0 else {
            let error = SystemCallError("rename into \(path)")
            unlinkat(directory, temp, 0)
            throw error
        }
    }

    /// `read(2)` until end of file or `limit` bytes; nil on a read error.
    package static func readAll(_ fd: Int32, limit: Int) -> [UInt8]? {
        FileDescriptor(rawValue: fd).readAll(limit: limit)
    }

    /// Appends one line with `O_APPEND` (atomic for lines under PIPE_BUF between
    /// writers); `O_NOFOLLOW`: a link at `path` is not written through.
    public static func appendLine(_ path: String, _ line: String) throws(SystemCallError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemCallError("open \(path)") }
        defer { close(fd) }
        // One write(2) for a whole line; a short one (a full disk) goes on from where it stopped.
        try FileDescriptor(rawValue: fd).writeEvery(Array((line + "\n").utf8), what: path)
    }

    /// `rmdir(2)`: removes `path` only when it is an empty directory.
    public static func removeEmptyDirectory(_ path: String) {
        rmdir(path)
    }

    /// `rename(2)`: `from` replaces `to` atomically.
    public static func rename(_ from: String, to: String) throws(SystemCallError) {
        guard Glibc.rename(from, to) == 0 else { throw SystemCallError("rename \(from) to \(to)") }
    }

    /// `access(2)` with `X_OK`: whether this user may execute `path`.
    public static func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 }

    public static func remove(_ path: String) {
        unlink(path)
    }

    /// Whether `path` names something once symbolic links are followed: `stat(2)`.
    /// A dangling link does not exist; use this before opening or reading a path.
    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    /// Whether there is a directory entry at `path` itself (file, directory, or
    /// any link, dangling or not): `lstat(2)`. Use this where the name is what
    /// matters (sysfs attributes and links, sockets, leftovers to remove).
    public static func entryExists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    /// Whether the path (after links) is a directory: `stat(2)`.
    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
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
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self) + "/" + path
    }
}
