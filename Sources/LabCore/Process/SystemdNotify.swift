#if canImport(Glibc)
import Glibc
#endif
import Platform

/// `sd_notify(3)` without libsystemd: one datagram of `KEY=VALUE` lines to
/// the AF_UNIX socket systemd names in `NOTIFY_SOCKET` (a path, or an
/// abstract name written `@name`). `qlab up --foreground` under a unit with
/// `Type=notify` says `READY=1` once QMP answers and `STOPPING=1` on its way
/// down, so systemd orders dependent units after a lab that is really up.
public enum SystemdNotify {
    /// Sends `state` (e.g. "READY=1\nSTATUS=lab x up") when `NOTIFY_SOCKET` is set;
    /// false when it is not set or the datagram could not be sent (never fatal).
    @discardableResult
    public static func notify(_ state: String, environment: [String: String] = currentEnvironment()) -> Bool {
        guard let target = environment["NOTIFY_SOCKET"], !target.isEmpty else { return false }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(target.utf8)
        // `@name`: Linux's abstract namespace, a leading NUL byte instead.
        if path.first == UInt8(ascii: "@") { path[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !path.isEmpty, path.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.enumerated() { buffer[index] = byte }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
        let bytes = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sockaddrPointer, length) }
            }
        }
        return sent == bytes.count
    }
}
