#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Platform

/// The few file-system calls lab loading needs, as thin wrappers.
package enum LabPaths {
    /// The whole file as UTF-8 text (`open`, `read`), or an errno message.
    package static func readText(_ path: String) -> Result<String, LabPathError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return .failure(LabPathError(errno: errno)) }
        defer { close(fd) }
        guard let bytes = FileSystem.readAll(fd, limit: (16 << 20) + 1) else { return .failure(LabPathError(errno: errno)) }
        if bytes.count > 16 << 20 { return .failure(LabPathError(message: "larger than 16 MiB; not a lab file")) }
        return .success(String(decoding: bytes, as: UTF8.self))
    }

    /// The first `count` bytes of a regular file, or nil when it cannot be
    /// read or is not a regular file. Opened O_NONBLOCK, so a FIFO put where
    /// an image belongs cannot block the open.
    package static func readPrefix(_ path: String, count: Int) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        var buffer = [UInt8](repeating: 0, count: count)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, count) }
        return n < 0 ? nil : Array(buffer[0..<n])
    }

    /// What `path` is when it exists and is not a regular file or a block
    /// device ("a directory", "a FIFO", ...), from `stat`; nil otherwise.
    package static func unusableFileKind(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        switch st.st_mode & S_IFMT {
        case S_IFREG, S_IFBLK: return nil
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a FIFO (named pipe)"
        case S_IFCHR: return "a character device"
        case S_IFSOCK: return "a socket"
        default: return "not a regular file"
        }
    }

    /// `qcow2` when the file starts with qcow2's magic, `raw` when it exists
    /// otherwise, and by extension when it does not exist yet.
    package static func imageFormat(_ path: String) -> String {
        if let head = readPrefix(path, count: 4) {
            return head == [0x51, 0x46, 0x49, 0xFB] ? "qcow2" : "raw"
        }
        return path.hasSuffix(".qcow2") ? "qcow2" : "raw"
    }
}

package struct LabPathError: Error {
    package var message: String

    package init(message: String) { self.message = message }
    package init(errno code: Int32) { self.message = String(cString: strerror(code)) }
}
