#if canImport(Glibc)
import Glibc
#endif

/// Thin wrappers over the socket calls qlab needs for QMP.
public enum UnixSocket {
    /// `socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC)` + `connect(2)` to `path`.
    public static func connect(path: String) throws(SystemCallError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemCallError("socket") }
        var address = try makeAddress(path)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result != 0 {
            let error = SystemCallError("connect to \(path)")
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    /// `socket` + `bind(2)` + `listen(2)` on `path`, then `chmod(path, mode)`.
    /// The umask is narrowed during bind so the socket is never briefly wider.
    public static func listen(path: String, mode: mode_t = 0o600, backlog: Int32 = 8) throws(SystemCallError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemCallError("socket") }
        var address = try makeAddress(path)
        let previousMask = umask(0o177)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        umask(previousMask)
        guard bound == 0 else {
            let error = SystemCallError("bind \(path)")
            Glibc.close(fd)
            throw error
        }
        guard Glibc.listen(fd, backlog) == 0, chmod(path, mode) == 0 else {
            let error = SystemCallError("listen on \(path)")
            Glibc.close(fd)
            unlink(path)
            throw error
        }
        return fd
    }

    /// `accept(2)`, then close-on-exec with `fcntl(2)`.
    public static func accept(_ listener: Int32) throws(SystemCallError) -> Int32 {
        let fd = retryOnInterrupt { Glibc.accept(listener, nil, nil) }
        guard fd >= 0 else { throw SystemCallError("accept") }
        FileDescriptor(rawValue: fd).setCloseOnExec(true)
        return fd
    }

    /// `socketpair(AF_UNIX, SOCK_STREAM)`: a connected pair, e.g. one end
    /// for a QEMU that qlab launches and one for qlab's client. Both ends are
    /// close-on-exec unless `inheritable` names the one to pass to a child.
    public static func pair(inheritableSecond: Bool = false) throws(SystemCallError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw SystemCallError("socketpair")
        }
        if inheritableSecond {
            FileDescriptor(rawValue: fds[1]).setCloseOnExec(false)
        }
        return (fds[0], fds[1])
    }

    static func makeAddress(_ path: String) throws(SystemCallError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { throw SystemCallError("socket path longer than \(capacity - 1) bytes: \(path)", errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }
}
