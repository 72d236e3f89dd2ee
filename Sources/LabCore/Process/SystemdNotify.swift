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
        // `@name`: Linux's abstract namespace (UnixSocket.sendDatagram handles it).
        return UnixSocket.sendDatagram(Array(state.utf8), to: target)
    }
}
