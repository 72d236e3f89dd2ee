#if canImport(Glibc)
import Glibc
#endif

/// Blocks of a file and reads at an offset: `posix_fallocate(3)` and `pread(2)`.
public enum FileSpace {
    /// `posix_fallocate(3)` (glibc: `fallocate(2)` with mode 0, which Swift's
    /// Glibc module does not declare): the filesystem allocates `length`
    /// bytes from `offset` now (the file grows to cover them), so later
    /// writes and page faults in a mapping of it cannot run out of space.
    /// Where the filesystem cannot, glibc writes a byte per block instead
    /// (same effect, slower). Retried on EINTR; the errno on failure (ENOSPC).
    public static func allocate(_ fd: Int32, offset: Int, length: Int) -> Result<Void, SystemErrno> {
        while true {
            let result = posix_fallocate(fd, off_t(offset), off_t(length))
            if result == 0 { return .success(()) }
            if result == EINTR { continue }
            return .failure(SystemErrno(result))
        }
    }

    /// `pread(2)` until `count` bytes from `offset` are read or the file
    /// ends (fewer bytes then); retried on EINTR; the errno on failure.
    public static func read(_ fd: Int32, count: Int, at offset: Int) -> Result<[UInt8], SystemErrno> {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if got < 0 {
                if errno == EINTR { continue }
                return .failure(SystemErrno(errno))
            }
            if got == 0 { break }
            done += got
        }
        return .success(Array(bytes.prefix(done)))
    }
}

extension FileSpace {
    /// `count` bytes of the file at `path` from `offset` (fewer where it
    /// ends): `open(2)` read-only and non-blocking (a FIFO is not waited
    /// on), `fstat(2)`: a regular file only, ``read(_:count:at:)``. Links
    /// are followed, as QEMU follows them when it opens the file.
    public static func read(path: String, count: Int, at offset: Int) -> Result<[UInt8], SystemErrno> {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return .failure(SystemErrno(errno)) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return .failure(SystemErrno(errno)) }
        guard info.st_mode & S_IFMT == S_IFREG || info.st_mode & S_IFMT == S_IFBLK else { return .failure(SystemErrno(EINVAL)) }
        return read(fd, count: count, at: offset)
    }
}
