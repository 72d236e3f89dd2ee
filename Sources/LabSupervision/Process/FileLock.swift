#if canImport(Glibc)
import Glibc
#endif
import Platform

/// An exclusive `flock(2)` on a lock file, so two qlab commands do not
/// change one lab at once. Released when the value is released or the process dies.
public final class FileLock: Sendable {
    public let directory: PrivateDirectory
    public let name: String
    private let fd: Int32

    public var path: String { directory.path(name) }

    /// Takes the lock on `name` in `directory` (`openat(2)` with
    /// `O_CREAT|O_NOFOLLOW`), waiting at most `timeout`; throws when another
    /// holder keeps it.
    ///
    /// The lock file may be removed by its holder (``removeFile()``), so after
    /// locking, the name must still be the locked inode; else retry.
    public init(in directory: PrivateDirectory, name: String, timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            let fd = openat(directory.descriptor, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SystemCallError("open \(directory.path(name))") }
            if flock(fd, LOCK_EX | LOCK_NB) == 0 {
                if case .success(let held) = FileStatus.of(descriptor: fd), case .success(let named) = FileStatus.of(name, in: directory.descriptor),
                    held.inode == named.inode, held.device == named.device
                {
                    self.directory = directory
                    self.name = name
                    self.fd = fd
                    return
                }
                close(fd)
                continue
            }
            let error = errno
            close(fd)
            guard error == EWOULDBLOCK || error == EINTR, ContinuousClock.now < deadline else {
                throw LabError.busy(directory.path(name))
            }
            // A real retry delay: flock(2) has no descriptor to wait on, and a
            // blocking flock could not honour the deadline or a removed lock file.
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Unlinks the lock file while holding it (`unlinkat(2)`): waiters then retry on a new file.
    public func removeFile() {
        directory.remove(name)
    }

    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
