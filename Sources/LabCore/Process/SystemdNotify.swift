import Platform

/// `sd_notify(3)` without libsystemd: one datagram of `KEY=VALUE` lines to
/// the AF_UNIX socket systemd names in `NOTIFY_SOCKET` (a path, or an
/// abstract name written `@name`). `qlab up --foreground` under a unit with
/// `Type=notify` says `READY=1` once QMP answers and `STOPPING=1` on its way
/// down, so systemd orders dependent units after a lab that is really up.
///
/// A send never blocks (``DatagramSocket/send(_:to:)``): when the socket's queue
/// is full (a receiver that does not read), the datagram is dropped with a log
/// line, and the lab goes on starting or stopping.
public enum SystemdNotify {
    /// Sends `state` (e.g. "READY=1\nSTATUS=lab x up") when `NOTIFY_SOCKET` is set;
    /// false when it is not set or the datagram could not be sent (never fatal).
    @discardableResult
    public static func notify(_ state: String, environment: [String: String] = currentEnvironment()) -> Bool {
        guard let target = environment["NOTIFY_SOCKET"], !target.isEmpty else { return false }
        var address = Array(target.utf8)
        // `@name`: Linux's abstract namespace, a leading NUL byte instead.
        if address.first == UInt8(ascii: "@") { address[0] = 0 }
        switch DatagramSocket.send(Array(state.utf8), to: address) {
        case .success: return true
        case .failure(let error):
            let first = state.split(separator: "\n").first.map(String.init) ?? state
            LabCoreLog.logger.error("sd_notify: \(first) not sent to NOTIFY_SOCKET \(target) (dropped: \(error))")
            return false
        }
    }
}
