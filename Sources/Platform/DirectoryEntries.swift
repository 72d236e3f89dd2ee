#if canImport(Glibc)
import Glibc
#endif

extension FileDescriptor.OpenOptions {
    /// `O_PATH`: a descriptor that names a directory for `*at` calls and
    /// `fstat(2)` without needing read permission.
    public static var pathOnly: FileDescriptor.OpenOptions { .init(rawValue: O_PATH) }
}

/// The `*at(2)` family on a directory descriptor: every entry is reached
/// from an open directory, never by a path resolved again, so a name
/// renamed or replaced by a link between two calls cannot redirect one.
extension FileDescriptor {
    /// `open(2)` of `path` with `O_PATH|O_DIRECTORY|O_CLOEXEC` (the root of a walk).
    public static func openDirectoryPath(_ path: String) -> Result<FileDescriptor, Errno> {
        let fd = retryOnInterrupt { Glibc.open(path, O_PATH | O_DIRECTORY | O_CLOEXEC) }
        return fd < 0 ? .failure(.current) : .success(FileDescriptor(rawValue: fd))
    }

    /// `openat(2)` of `name` in this directory; `O_CLOEXEC` always.
    /// `permissions` is the mode of a file made with `.create`.
    public func openAt(
        _ name: String, _ access: AccessMode, options: OpenOptions = [], permissions: FilePermissions = [.ownerReadWrite]
    ) -> Result<FileDescriptor, Errno> {
        let flags = access.rawValue | options.rawValue | O_CLOEXEC
        let fd = retryOnInterrupt { openat(rawValue, name, flags, permissions.rawValue) }
        return fd < 0 ? .failure(.current) : .success(FileDescriptor(rawValue: fd))
    }

    /// `mkdirat(2)` of `name` with `mode` (the umask applies).
    public func makeDirectory(at name: String, mode: mode_t) -> Result<Void, Errno> {
        mkdirat(rawValue, name, mode) == 0 ? .success(()) : .failure(.current)
    }

    /// `unlinkat(2)`: the entry itself, never what a link names.
    @discardableResult
    public func removeEntry(at name: String) -> Result<Void, Errno> {
        unlinkat(rawValue, name, 0) == 0 ? .success(()) : .failure(.current)
    }

    /// `unlinkat(2)` with `AT_REMOVEDIR`: an empty subdirectory.
    @discardableResult
    public func removeDirectory(at name: String) -> Result<Void, Errno> {
        unlinkat(rawValue, name, AT_REMOVEDIR) == 0 ? .success(()) : .failure(.current)
    }

    /// `renameat(2)` of `name` to `newName`, both in this directory (a link at
    /// `newName` is replaced, never followed).
    public func renameEntry(_ name: String, to newName: String) -> Result<Void, Errno> {
        renameat(rawValue, name, rawValue, newName) == 0 ? .success(()) : .failure(.current)
    }

    /// `readlinkat(2)`: what the link `name` here says; nil when it is none.
    public func readLink(at name: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlinkat(rawValue, name, &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// `fchmod(2)`.
    public func setMode(_ mode: mode_t) -> Result<Void, Errno> {
        fchmod(rawValue, mode) == 0 ? .success(()) : .failure(.current)
    }

    /// `fsync(2)`.
    public func synchronize() -> Result<Void, Errno> {
        retryOnInterrupt { fsync(rawValue) } == 0 ? .success(()) : .failure(.current)
    }

    /// The names in this directory, sorted, without `.` and `..`:
    /// `fdopendir(3)` on a `dup(2)` (so this descriptor stays open), from the start.
    public func entryNames() -> [String] {
        let copy = Glibc.dup(rawValue)
        guard copy >= 0, let dir = fdopendir(copy) else {
            if copy >= 0 { _ = Glibc.close(copy) }
            return []
        }
        defer { closedir(dir) }
        rewinddir(dir)
        return HostFiles.sortedNames(dir)
    }

    /// One non-blocking try at an exclusive `flock(2)`; `.wouldBlock` (or
    /// `.interrupted`) when another holder has it.
    public func tryLockExclusive() -> Result<Void, Errno> {
        flock(rawValue, LOCK_EX | LOCK_NB) == 0 ? .success(()) : .failure(.current)
    }

    /// One non-blocking try at a shared `flock(2)` (`LOCK_SH|LOCK_NB`): succeeds
    /// only while nobody holds the file exclusively, which makes it a probe.
    public func tryLockShared() -> Result<Void, Errno> {
        flock(rawValue, LOCK_SH | LOCK_NB) == 0 ? .success(()) : .failure(.current)
    }

    /// `ftruncate(2)` to `size` bytes.
    public func truncate(toSize size: Int) -> Result<Void, Errno> {
        retryOnInterrupt { Glibc.ftruncate(rawValue, off_t(size)) } == 0 ? .success(()) : .failure(.current)
    }

    /// `pwrite(2)` of every byte of `bytes` at `offset` (a short write goes on; `EINTR` retried).
    public func writeEvery(_ bytes: [UInt8], atOffset offset: Int) -> Result<Void, Errno> {
        var done = 0
        while done < bytes.count {
            let count = bytes.withUnsafeBytes { buffer in
                retryOnInterrupt { Glibc.pwrite(rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done)) }
            }
            if count < 0 { return .failure(.current) }
            done += count
        }
        return .success(())
    }

    /// `flock(LOCK_UN)`.
    public func unlock() {
        _ = flock(rawValue, LOCK_UN)
    }
}
