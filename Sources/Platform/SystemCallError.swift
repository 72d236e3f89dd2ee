#if canImport(Glibc)
import Glibc
#endif

/// An error from a system call, with errno and what was being done.
public struct SystemCallError: Error, Sendable, Hashable, CustomStringConvertible {
    public var operation: String
    public var errno: Int32

    public init(_ operation: String, errno: Int32 = Glibc.errno) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
}
