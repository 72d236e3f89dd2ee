#if canImport(Glibc)
import Glibc
#endif

/// A whole file a user hands qlab to read (a run report), up to a stated size,
/// with each way it can fail told apart so the message can say which.
public enum InputFile {
    public enum Failure: Error, Sendable, Hashable {
        case missing
        case directory
        /// A socket or a block device: not something qlab reads a document from.
        case notAFile
        case open(SystemErrno)
        case read(SystemErrno)
        /// More than `limit` bytes.
        case tooLarge(limit: Int)
    }

    /// `open(2)` (`O_NONBLOCK`, so opening a FIFO never waits), `fstat(2)`, then
    /// blocking `read(2)`s to end of file. A regular file larger than `limit` is
    /// refused from its size, before any read; a FIFO or character device (`<(...)`,
    /// `/dev/stdin`) is read as a stream and refused once it passes `limit`.
    public static func read(_ path: String, limit: Int) -> Result<[UInt8], Failure> {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            return .failure(code == ENOENT ? .missing : code == EISDIR ? .directory : .open(SystemErrno(code)))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return .failure(.read(SystemErrno(errno))) }
        switch info.st_mode & S_IFMT {
        case S_IFDIR: return .failure(.directory)
        case S_IFREG:
            if Int(info.st_size) > limit { return .failure(.tooLarge(limit: limit)) }
        case S_IFIFO, S_IFCHR:
            let flags = fcntl(fd, F_GETFL)
            if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        default: return .failure(.notAFile)
        }
        guard let bytes = FileSystem.readAll(fd, limit: limit + 1) else { return .failure(.read(SystemErrno(errno))) }
        return bytes.count > limit ? .failure(.tooLarge(limit: limit)) : .success(bytes)
    }

    /// "256 MiB": a byte count for a message.
    public static func describe(bytes: Int) -> String {
        bytes >= 1 << 20 && bytes % (1 << 20) == 0 ? "\(bytes >> 20) MiB" : "\(bytes) bytes"
    }
}
