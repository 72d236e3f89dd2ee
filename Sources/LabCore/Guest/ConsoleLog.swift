#if canImport(Glibc)
import Glibc
#endif

/// Reads the console log QEMU keeps for a lab (`logfile=` of the serial
/// chardev: everything the guest printed, whether or not a client was
/// connected).
public enum ConsoleLog {
    /// Up to `limit` bytes of `path` from `offset` (`pread(2)`); nil when it cannot be opened.
    public static func read(_ path: String, from offset: Int, limit: Int = 4 << 20) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var result: [UInt8] = []
        var position = max(0, offset)
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while result.count < limit {
            let n = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, min($0.count, limit - result.count), off_t(position)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            result.append(contentsOf: chunk[0..<n])
            position += n
        }
        return result
    }

    /// The file's size (`stat(2)`), 0 when it does not exist.
    public static func size(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : 0
    }

    /// The last `bytes` bytes of the log as text, `\r` dropped.
    public static func tail(_ path: String, bytes: Int = 4096) -> String {
        let size = size(path)
        return text(read(path, from: max(0, size - bytes), limit: bytes) ?? [])
    }

    /// Console bytes as text: `\r` dropped, invalid UTF-8 replaced.
    static func text<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String {
        String(decoding: bytes.filter { $0 != 0x0D }, as: UTF8.self)
    }
}
