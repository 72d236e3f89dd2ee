import Platform

/// The command a running lab belongs to: the `qlab run` (or `guest check`,
/// `nested run`) that started it for itself (``LabOwnership``). Kept in the
/// lab's record (`owner`), written once when the lab is planned, so every
/// command that would change the lab finds it under the lab's lock
/// (``LabRuntime/takeLock(timeout:checkingOwner:)``).
///
/// An owner is believed only while its pid still has the start time recorded
/// with it (``ProcessIdentity``): a dead owner's reused pid owns nothing.
public struct LabOwner: Sendable, Hashable {
    /// How the owner was started, as `ps` would show it: "qlab run labs/x.yaml --jobs 2".
    public var command: String
    public var pid: Int32
    /// `/proc/PID/stat` field 22 of ``pid`` when the owner was recorded.
    public var startTime: UInt64
    /// Seconds since the epoch when the owner started the lab.
    public var since: Double

    public init(command: String, pid: Int32, startTime: UInt64, since: Double) {
        self.command = command
        self.pid = pid
        self.startTime = startTime
        self.since = since
    }

    /// This process as an owner (nil when /proc does not give its start time).
    public static func thisProcess(at since: Double = wallClockSeconds()) -> LabOwner? {
        let pid = ThisProcess.id
        guard let startTime = ProcessIdentity.startTime(pid) else { return nil }
        return LabOwner(command: commandText(CommandLine.arguments), pid: pid, startTime: startTime, since: since)
    }

    /// argv as one line, the program by its base name, at most 200 characters.
    public static func commandText(_ argv: [String]) -> String {
        let words = argv.enumerated().map { $0.offset == 0 ? Paths.baseName($0.element) : $0.element }
        let text = words.joined(separator: " ")
        return text.count > 200 ? String(text.prefix(197)) + "..." : text
    }

    /// True while the owner runs: its pid has the recorded start time.
    public var isAlive: Bool { ProcessIdentity.matches(pid, startTime: startTime) }

    /// True when this process is the owner or works for it (a hook the run
    /// started, and whatever the hook starts): those may change the lab.
    public var includesThisProcess: Bool { ProcessIdentity.descends(ThisProcess.id, from: pid) }

    /// "qlab run labs/x.yaml (pid 4242, since 2026-12-07T02:31:07Z)".
    public var description: String { "\(command) (pid \(pid), since \(formatTimestamp(since)))" }
}

extension LabOwner: Codable {
    enum CodingKeys: String, CodingKey {
        case command, pid, since
        case startTime = "start_time"
    }
}
