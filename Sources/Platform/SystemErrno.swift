#if canImport(Glibc)
import Glibc
#endif

/// An `errno` value with its `strerror(3)` text.
public struct SystemErrno: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: Int32
    public init(_ code: Int32) { self.code = code }
    public init(_ errno: Errno) { self.code = errno.rawValue }
    public var description: String { String(cString: strerror(code)) }
}
