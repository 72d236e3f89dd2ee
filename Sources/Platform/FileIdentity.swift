#if canImport(Glibc)
import Glibc
#endif

/// What tells one version of a file from another without reading it, as
/// `fstat(2)` reports it: size, device and inode, modification time, and
/// the bytes the filesystem holds for it (`st_blocks` x 512).
public struct FileIdentity: Sendable, Hashable {
    public var size: Int
    public var device: UInt64
    public var inode: UInt64
    /// `st_mtim`: seconds and nanoseconds since the epoch.
    public var modifiedSeconds: Int64
    public var modifiedNanoseconds: Int64
    public var allocatedBytes: UInt64

    /// `fstat(2)` of an open descriptor; the errno on failure.
    public static func of(descriptor fd: Int32) -> Result<FileIdentity, SystemErrno> {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return .failure(SystemErrno(errno)) }
        return .success(
            FileIdentity(
                size: Int(info.st_size), device: UInt64(info.st_dev), inode: UInt64(info.st_ino),
                modifiedSeconds: Int64(info.st_mtim.tv_sec), modifiedNanoseconds: Int64(info.st_mtim.tv_nsec),
                allocatedBytes: UInt64(info.st_blocks) * 512))
    }
}
