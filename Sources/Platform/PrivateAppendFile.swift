#if canImport(Glibc)
import Glibc
#endif

/// A file only its owner may read, opened to append to (a QMP trace, which
/// can hold what the guest printed and what qlab sent QEMU).
public enum PrivateAppendFile {
    /// `open(2)` with `O_WRONLY|O_CREAT|O_APPEND|O_NOFOLLOW|O_CLOEXEC` (a new file
    /// is 0600), then `fstat(2)` of what was opened: refused unless it is a regular
    /// file owned by this process's effective user with no permission for group or
    /// others, as qlab's runtime directories must be. A file someone else made (in
    /// a shared /tmp, mode 0666, waiting for root's trace) is never appended to.
    /// Throws with the reason in the operation text; the descriptor is the caller's to close.
    public static func open(_ path: String) throws(SystemCallError) -> Int32 {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            if errno == ELOOP { throw SystemCallError("open \(path): a symbolic link (qlab does not follow one for a trace)", errno: ELOOP) }
            // O_NONBLOCK: a FIFO is refused at once (no reader: ENXIO), not waited on.
            if errno == ENXIO { throw SystemCallError("refused \(path): not a regular file", errno: ENXIO) }
            throw SystemCallError("open \(path)")
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let error = SystemCallError("fstat \(path)")
            close(fd)
            throw error
        }
        let refusal: String?
        if info.st_mode & S_IFMT != S_IFREG {
            refusal = "not a regular file"
        } else if info.st_uid != geteuid() {
            refusal = "owned by \(FileStatus.describe(user: info.st_uid)), not by you (\(FileStatus.describe(user: geteuid())))"
        } else if info.st_mode & 0o077 != 0 {
            let digits = String(info.st_mode & 0o7777, radix: 8)
            refusal = "mode \(String(repeating: "0", count: max(0, 4 - digits.count)) + digits) lets others read or write it (chmod 600 it)"
        } else {
            refusal = nil
        }
        if let refusal {
            close(fd)
            throw SystemCallError("refused \(path): \(refusal); a QMP trace goes only to a file of your own that only you can read", errno: EPERM)
        }
        // Appends are plain blocking writes to a regular file.
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        return fd
    }
}
