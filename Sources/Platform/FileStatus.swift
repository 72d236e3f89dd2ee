#if canImport(Glibc)
import Glibc
#endif

/// What `fstat(2)` or `fstatat(2)` says about a file: its type, owner and
/// permission bits, as qlab checks them before trusting a directory or a record.
public struct FileStatus: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case directory, regular, symbolicLink, other
    }

    public var kind: Kind
    public var owner: uid_t
    /// Permission bits with set-id and sticky bits (`st_mode & 07777`).
    public var mode: mode_t
    public var device: UInt64
    public var inode: UInt64
    public var size: Int

    init(_ info: stat) {
        switch info.st_mode & S_IFMT {
        case S_IFDIR: kind = .directory
        case S_IFREG: kind = .regular
        case S_IFLNK: kind = .symbolicLink
        default: kind = .other
        }
        owner = info.st_uid
        mode = info.st_mode & 0o7777
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int(info.st_size)
    }

    /// `fstat(2)` of an open descriptor; the errno on failure.
    public static func of(descriptor fd: Int32) -> Result<FileStatus, SystemErrno> {
        var info = stat()
        return fstat(fd, &info) == 0 ? .success(FileStatus(info)) : .failure(SystemErrno(errno))
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
