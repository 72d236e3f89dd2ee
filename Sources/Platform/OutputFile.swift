#if canImport(Glibc)
import Glibc
#endif

/// A file qlab writes at a path the user gave (run reports: JSON, JUnit, HTML;
/// `report html -o`; `report merge`; screenshots; `nested run --json-report`):
/// one policy for all of them, decided here.
///
/// - **Nothing there**: the file is created (as a regular file is replaced, below).
/// - **A regular file**: replaced atomically (a temporary file beside it, then
///   `rename(2)`): a reader sees the old file or the new one, never half of one.
/// - **A character device or a FIFO** (`/dev/null`, a terminal, `mkfifo`): written
///   to as a stream, never replaced. A FIFO nobody reads is refused rather than
///   waited on without end (start the reader first). A socket cannot be opened
///   as a file: refused.
/// - **A directory**: refused.
/// - **A symbolic link** is followed when the caller or root owns it, and the same
///   policy applies to what it points to: a regular file there is replaced
///   atomically in *its* directory (the link stays a link), a device or FIFO is a
///   stream (`/dev/stdout` on a pipe or a terminal). Refused: a link another user
///   owns, a dangling link, a link to a directory, and a link into a directory
///   the caller cannot write.
///
/// Why links are followed at all: `/dev/stdout` and `/dev/stderr` are links, and
/// so is a user's `latest.html -> nights/42.html`; refusing them all would refuse
/// ordinary use. Why not every link: in a shared directory (/tmp) another user
/// can plant `report.html -> /etc/something` and wait for root to write there;
/// a link the caller did not make (nor root) is never trusted, which is the rule
/// of the kernel's `fs.protected_symlinks` applied everywhere. A dangling link
/// is refused because qlab creates no file through a link: where it would land
/// is the link maker's choice, not the caller's.
public enum OutputFile {
    /// What is at the path, and so how it is written.
    public enum Target: Sendable, Hashable {
        /// A regular file (or nothing): replaced or created atomically at this path
        /// (the link's target when the user's path was a link).
        case replace(String)
        /// A character device or FIFO, written to as a stream through this path.
        case stream(String, what: String)
    }

    /// Decides how `path` would be written, without writing; refusals as
    /// ``OutputFileError`` (`refused`). A command checks its output paths with
    /// this before long work (a run), so a bad path is an error at the start.
    public static func target(_ path: String) throws(OutputFileError) -> Target {
        guard !path.isEmpty else { throw .refused(path, "an empty path: give a file name") }
        var info = stat()
        guard lstat(path, &info) == 0 else {
            let code = errno
            if code == ENOENT { return try newFile(path) }
            throw .failed(path, SystemCallError("look at \(path)", errno: code))
        }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return .replace(path)
        case S_IFDIR: throw .refused(path, "a directory: give a file name (e.g. \(path.hasSuffix("/") ? path : path + "/")FILE)")
        case S_IFLNK: return try throughLink(path, owner: info.st_uid)
        default: return try stream(path, info)
        }
    }

    /// Writes `bytes` to `path` as ``OutputFile`` says (new and regular files get `mode`).
    public static func write(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(OutputFileError) {
        switch try target(path) {
        case .replace(let file):
            do {
                try FileSystem.writeAtomically(file, bytes, mode: mode)
            } catch {
                if error.errno == EACCES || error.errno == EROFS || error.errno == EPERM {
                    let directory = Paths.directory(of: file)
                    throw .refused(path, "cannot write in \(directory)\(file == path ? "" : " (where the link points)"): \(SystemErrno(error.errno))")
                }
                throw .failed(path, error)
            }
        case .stream(let file, let what):
            try writeStream(path, through: file, what: what, bytes)
        }
    }

    /// Nothing at `path`: its directory must exist (qlab makes no directories for a file name).
    static func newFile(_ path: String) throws(OutputFileError) -> Target {
        let directory = Paths.directory(of: path)
        var info = stat()
        guard stat(directory, &info) == 0 else {
            throw .refused(path, "its directory \(directory) \(errno == ENOENT ? "does not exist" : "cannot be used: \(SystemErrno(errno))")")
        }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw .refused(path, "\(directory) is not a directory") }
        return .replace(path)
    }

    /// A device, FIFO or socket at `path` (not a link): `info` is its `lstat(2)`.
    static func stream(_ path: String, _ info: stat) throws(OutputFileError) -> Target {
        switch info.st_mode & S_IFMT {
        case S_IFCHR: return .stream(path, what: "a character device")
        case S_IFIFO: return .stream(path, what: "a FIFO")
        case S_IFSOCK: throw .refused(path, "a socket: qlab writes files, give a file name")
        case S_IFBLK: throw .refused(path, "a block device: qlab does not write reports onto disks")
        default: throw .refused(path, "not a file qlab can write")
        }
    }

    /// A link at `path` owned by `owner`: followed when the caller or root made it.
    static func throughLink(_ path: String, owner: uid_t) throws(OutputFileError) -> Target {
        guard owner == 0 || owner == geteuid() else {
            throw .refused(path, "a symbolic link owned by \(FileStatus.describe(user: owner)): qlab follows only links you or root made; remove it or give another path")
        }
        var info = stat()
        guard stat(path, &info) == 0 else {
            let code = errno
            let target = HostFiles.readLink(path).map { " to \($0)" } ?? ""
            if code == ENOENT { throw .refused(path, "a dangling symbolic link\(target): qlab creates no file through a link; remove it or give the target's path") }
            throw .refused(path, "a symbolic link\(target) qlab cannot follow: \(SystemErrno(code))")
        }
        switch info.st_mode & S_IFMT {
        case S_IFREG:
            // Replaced in its own directory: the name the link resolves to, every link on the way followed.
            guard let resolved = HostFiles.realPath(path) else { throw .failed(path, SystemCallError("resolve \(path)")) }
            return .replace(resolved)
        case S_IFDIR: throw .refused(path, "a symbolic link to a directory: give a file name")
        default: return try stream(path, info)
        }
    }

    /// `open(2)` (`O_NONBLOCK`, so a FIFO nobody reads is ENXIO, not a wait), then
    /// blocking `write(2)`s of everything (short writes continued, EINTR retried).
    static func writeStream(_ path: String, through file: String, what: String, _ bytes: [UInt8]) throws(OutputFileError) {
        let fd = open(file, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENXIO { throw .refused(path, "\(what) that nobody reads: start the reader first") }
            throw .failed(path, SystemCallError("open \(path) (\(what))", errno: code))
        }
        defer { close(fd) }
        // What was opened is what was looked at: a stream, not a file put there since.
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFCHR || info.st_mode & S_IFMT == S_IFIFO else {
            throw .refused(path, "changed while qlab opened it (no longer \(what))")
        }
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        var offset = 0
        while offset < bytes.count {
            let count = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            if count < 0 {
                if errno == EINTR { continue }
                throw .failed(path, SystemCallError("write \(path) (\(what))"))
            }
            offset += count
        }
    }
}

/// Why an output file was not written: refused by ``OutputFile``'s policy (the
/// path names something qlab will not write: bad input), or a write that failed.
public struct OutputFileError: Error, Sendable, Hashable, CustomStringConvertible {
    public var path: String
    /// True for a refusal (a directory, a link qlab does not follow, ...); false when the write failed.
    public var refused: Bool
    public var reason: String

    public static func refused(_ path: String, _ reason: String) -> OutputFileError {
        OutputFileError(path: path, refused: true, reason: reason)
    }

    public static func failed(_ path: String, _ error: SystemCallError) -> OutputFileError {
        OutputFileError(path: path, refused: false, reason: "the write failed: \(error)")
    }

    public var description: String { "cannot write \(path): \(reason)" }
}
