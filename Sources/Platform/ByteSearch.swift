#if canImport(Glibc)
import Glibc
#endif

/// Finding a byte in a buffer with libc's vectorised `memchr(3)` (a QMP
/// reader scans every byte QEMU sends for the end of a line).
public enum ByteSearch {
    /// The offset of the first `byte` in `buffer`, nil when there is none.
    @inlinable
    public static func firstIndex(of byte: UInt8, in buffer: UnsafeRawBufferPointer) -> Int? {
        guard let base = buffer.baseAddress, buffer.count > 0, let hit = memchr(base, Int32(byte), buffer.count) else { return nil }
        return base.distance(to: UnsafeRawPointer(hit))
    }

    /// Whether `buffer` holds `needle` at `offset` (`memcmp(3)`).
    @inlinable
    public static func matches(_ needle: UnsafeRawBufferPointer, in buffer: UnsafeRawBufferPointer, at offset: Int) -> Bool {
        guard offset >= 0, offset + needle.count <= buffer.count else { return false }
        guard let base = buffer.baseAddress, let wanted = needle.baseAddress else { return needle.isEmpty }
        return memcmp(base + offset, wanted, needle.count) == 0
    }
}
