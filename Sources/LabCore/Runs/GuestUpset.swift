import Platform
import QMP

/// Something QEMU saw happen to the guest while a test's command ran: a
/// kernel panic (GUEST_PANICKED, from the pvpanic device the Linux profile
/// adds), a reset or a shutdown the guest did itself (RESET, SHUTDOWN with
/// `guest: true`). The command's result will never come, so the run ends at
/// once as an `error` instead of waiting out its timeout.
enum GuestUpset: Error, Sendable, Equatable {
    case panicked
    /// QEMU's reason (`guest-reset`, `guest-panic`, ...).
    case reset(reason: String)
    case shutdown(reason: String)

    /// The upset `event` says, if it says one: events of qlab's own making (`guest: false`) are none.
    init?(_ event: QMPEvent) {
        let reason = event.data["reason"]?.stringValue ?? ""
        switch event.name {
        case "GUEST_PANICKED": self = .panicked
        case "RESET" where event.data["guest"]?.boolValue == true: self = .reset(reason: reason)
        case "SHUTDOWN" where event.data["guest"]?.boolValue == true: self = .shutdown(reason: reason)
        default: return nil
        }
    }

    /// "guest panicked during the test", with QEMU's reason for a reset or shutdown.
    var description: String {
        switch self {
        case .panicked: return "guest panicked during the test"
        case .reset(let reason): return "guest reset during the test" + (reason.isEmpty ? "" : " (\(reason))")
        case .shutdown(let reason): return "guest shut down during the test" + (reason.isEmpty ? "" : " (\(reason))")
        }
    }

    /// Runs `body` while watching `qmp`'s events; throws the first ``GuestUpset``
    /// (and cancels `body`) should one come before `body` ends. Events that
    /// arrived before the call are not looked at.
    static func watching<T: Sendable>(_ qmp: QMPClient, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let events = qmp.events()
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                for await event in events {
                    if let upset = GuestUpset(event) { throw upset }
                }
                // The connection closed (QEMU ended): the command's own error says so.
                return nil
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let result = next { return result }
            }
            throw CancellationError()
        }
    }
}

extension ConsoleLog {
    /// The console tail of a run that broke the guest: the last `bytes`, or,
    /// when a kernel panic's "Kernel panic" line lies before them (a panic's
    /// backtrace follows its line), from that line on, its first and last
    /// `bytes` with the middle left out. Only what lies at or after `offset`.
    static func panicTail(_ path: String, bytes: Int = 2048, since offset: Int = 0) -> String {
        let wide = tail(path, bytes: 16 * bytes, since: offset)
        guard let line = wide.ranges(of: "Kernel panic").last else { return tail(path, bytes: bytes, since: offset) }
        let lineStart = wide[..<line.lowerBound].lastIndex(of: "\n").map { wide.index(after: $0) } ?? wide.startIndex
        let fromPanic = wide[lineStart...]
        guard fromPanic.utf8.count > 2 * bytes else { return String(fromPanic) }
        let head = String(decoding: fromPanic.utf8.prefix(bytes), as: UTF8.self)
        let end = String(decoding: fromPanic.utf8.suffix(bytes), as: UTF8.self)
        return head + "\n[...]\n" + end
    }

    /// The line of a kernel panic in `text`, the last one, from its words
    /// on (`Kernel panic - not syncing: ...`, the printk time left out); nil when none.
    static func panicLine(in text: String) -> String? {
        guard let found = text.ranges(of: "Kernel panic").last else { return nil }
        let end = text[found.lowerBound...].firstIndex(of: "\n") ?? text.endIndex
        return String(text[found.lowerBound..<end]).trimmingSpaces()
    }
}
