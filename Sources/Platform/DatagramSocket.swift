#if canImport(Glibc)
import Glibc
#endif

/// One datagram to an AF_UNIX datagram socket that never waits (`sd_notify(3)`'s transport).
public enum DatagramSocket {
    /// `socket(AF_UNIX, SOCK_DGRAM|SOCK_NONBLOCK|SOCK_CLOEXEC)` and one `sendto(2)`
    /// with `MSG_DONTWAIT|MSG_NOSIGNAL` to `address` (a path's bytes, or an abstract
    /// name with its leading NUL). A receiver whose queue is full gives `EAGAIN` at
    /// once: the datagram is dropped, the caller is never blocked by a reader that
    /// does not read. A short send (not possible for datagrams) is `EMSGSIZE`.
    public static func send(_ bytes: [UInt8], to address: [UInt8]) -> Result<Void, SystemErrno> {
        var socketAddress = sockaddr_un()
        socketAddress.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: socketAddress.sun_path)
        guard !address.isEmpty, address.count < capacity else { return .failure(SystemErrno(ENAMETOOLONG)) }
        withUnsafeMutableBytes(of: &socketAddress.sun_path) { buffer in
            for (index, byte) in address.enumerated() { buffer[index] = byte }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(SystemErrno(errno)) }
        defer { close(fd) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + address.count)
        while true {
            let sent = withUnsafePointer(to: &socketAddress) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
                    bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL), sockaddrPointer, length) }
                }
            }
            if sent == bytes.count { return .success(()) }
            if sent < 0 && errno == EINTR { continue }
            return .failure(SystemErrno(sent < 0 ? errno : EMSGSIZE))
        }
    }
}
