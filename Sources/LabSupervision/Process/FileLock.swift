#if canImport(Glibc)
import Glibc
#endif
import Platform
import Synchronization

/// An exclusive `flock(2)` on a lock file, so two qlab commands do not
/// change one lab at once. Released when the value is released or the process dies.
///
/// A lock file nobody needs goes with its last holder: when `unneeded` says so
/// at release (the lab has no runtime dir any more), the file is unlinked
/// before it is unlocked, so no lock file outlives the lab it guarded.
public final class FileLock: Sendable {
    public let directory: PrivateDirectory
    public let name: String
    private let fd: Int32
    private let unneeded: @Sendable () -> Bool
    /// Set once ``removeFile()`` unlinked the name: it may name another holder's file since.
    private let removed = Mutex(false)

    public var path: String { directory.path(name) }

    /// Takes the lock on `name` in `directory` (`openat(2)` with
    /// `O_CREAT|O_NOFOLLOW`), waiting at most `timeout`; throws when another
    /// holder keeps it.
    ///
    /// The lock file may be removed by its holder (``removeFile()``), so after
    /// locking, the name must still be the locked inode; else retry.
    public init(
        in directory: PrivateDirectory, name: String, timeout: Duration = .seconds(30), unneeded: @escaping @Sendable () -> Bool = { false }
    ) async throws {
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
                    self.unneeded = unneeded
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
        removed.withLock { removed in
            if !removed { directory.remove(name) }
            removed = true
        }
    }

    deinit {
        // Only while the name is still this file: every holder unlinks only
        // while holding, so no one can have replaced it meanwhile.
        if !removed.withLock({ $0 }), unneeded(), case .success(let held) = FileStatus.of(descriptor: fd),
            case .success(let named) = FileStatus.of(name, in: directory.descriptor), held.inode == named.inode, held.device == named.device
        {
            directory.remove(name)
        }
        flock(fd, LOCK_UN)
        close(fd)
    }
}
