#if canImport(Glibc)
import Glibc
#endif

/// What `fstat(2)` or `fstatat(2)` says about a file: its type, owner and
/// permission bits, as qlab checks them before trusting a directory or a record.
public struct FileStatus: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case directory, regular, symbolicLink, blockDevice, characterDevice, fifo, socket, other
    }

    public var kind: Kind
    public var owner: uid_t
    /// Permission bits with set-id and sticky bits (`st_mode & 07777`).
    public var mode: mode_t
    public var device: UInt64
    public var inode: UInt64
    public var size: Int
    /// `st_mtim`: when the contents last changed.
    public var modifiedSeconds: Int
    public var modifiedNanoseconds: Int

    init(_ info: stat) {
        switch info.st_mode & S_IFMT {
        case S_IFDIR: kind = .directory
        case S_IFREG: kind = .regular
        case S_IFLNK: kind = .symbolicLink
        case S_IFBLK: kind = .blockDevice
        case S_IFCHR: kind = .characterDevice
        case S_IFIFO: kind = .fifo
        case S_IFSOCK: kind = .socket
        default: kind = .other
        }
        owner = info.st_uid
        mode = info.st_mode & 0o7777
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int(info.st_size)
        modifiedSeconds = Int(info.st_mtim.tv_sec)
        modifiedNanoseconds = Int(info.st_mtim.tv_nsec)
    }

    /// `fstat(2)` of an open descriptor; the errno on failure.
    public static func of(descriptor fd: Int32) -> Result<FileStatus, SystemErrno> {
        var info = stat()
        return fstat(fd, &info) == 0 ? .success(FileStatus(info)) : .failure(SystemErrno(errno))
    }

    /// `fstat(2)` of an open descriptor; the errno on failure.
    public static func of(descriptor fd: FileDescriptor) -> Result<FileStatus, SystemErrno> {
        of(descriptor: fd.rawValue)
    }

    /// `fstatat(2)` with `AT_SYMLINK_NOFOLLOW` of `name` in `directory`.
    public static func of(_ name: String, in directory: FileDescriptor) -> Result<FileStatus, SystemErrno> {
        of(name, in: directory.rawValue)
    }

    /// `stat(2)` of `path`, links followed; nil when it cannot be had.
    public static func following(_ path: String) -> FileStatus? {
        var info = stat()
        return stat(path, &info) == 0 ? FileStatus(info) : nil
    }

    /// `fstatat(2)` with `AT_SYMLINK_NOFOLLOW` of `name` in the directory
    /// `directory`: a symbolic link is described, never followed.
    public static func of(_ name: String, in directory: Int32) -> Result<FileStatus, SystemErrno> {
        var info = stat()
        return fstatat(directory, name, &info, AT_SYMLINK_NOFOLLOW) == 0 ? .success(FileStatus(info)) : .failure(SystemErrno(errno))
    }

    /// Whether the owner is root or this process's effective user: the
    /// only users qlab lets decide where its files go.
    public var ownedByRootOrCaller: Bool { owner == 0 || owner == geteuid() }

    /// Group or others may write (and so add, remove or rename entries).
    public var writableByOthers: Bool { mode & 0o022 != 0 }

    /// The sticky bit: others may add entries but not remove or rename ours (like /tmp).
    public var sticky: Bool { mode & 0o1000 != 0 }

    /// The mode as `ls -l`'s octal, e.g. `1777`, `0700`.
    public var modeText: String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    /// `uid 65534 (nobody)`: the owner with its name from `getpwuid_r(3)` when it has one.
    public var ownerText: String { Self.describe(user: owner) }

    /// `uid N (name)` for any user id.
    public static func describe(user uid: uid_t) -> String {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        if getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, let found = result, let name = found.pointee.pw_name {
            return "uid \(uid) (\(String(cString: name)))"
        }
        return "uid \(uid)"
    }
}
