import Platform

/// QEMU's version as the greeting and `query-version` report it.
public struct QEMUVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public var micro: Int
    /// Distribution suffix, e.g. "Debian 1:7.2+dfsg-7+deb12u18".
    public var package: String

    public init(major: Int, minor: Int, micro: Int, package: String = "") {
        self.major = major
        self.minor = minor
        self.micro = micro
        self.package = package
    }

    /// From `{"qemu": {"major", "minor", "micro"}, "package"}`.
    public init?(_ json: JSONValue) {
        guard let qemu = json["qemu"], let major = qemu["major"]?.intValue, let minor = qemu["minor"]?.intValue,
            let micro = qemu["micro"]?.intValue
        else { return nil }
        self.init(major: major, minor: minor, micro: micro, package: json["package"]?.stringValue?.trimmingSpaces ?? "")
    }

    public static func < (a: QEMUVersion, b: QEMUVersion) -> Bool {
        (a.major, a.minor, a.micro) < (b.major, b.minor, b.micro)
    }

    public var description: String { "\(major).\(minor).\(micro)" }
}

/// The first message QEMU sends: `{"QMP": {"version": ..., "capabilities": [...]}}`.
public struct QMPGreeting: Sendable, Hashable {
    public var version: QEMUVersion
    /// Capabilities offered, e.g. `["oob"]`.
    public var capabilities: [String]

    public init?(_ message: JSONObject) {
        guard let qmp = message["QMP"], let version = qmp["version"].flatMap(QEMUVersion.init) else { return nil }
        self.version = version
        self.capabilities = qmp["capabilities"]?.arrayValue?.compactMap(\.stringValue) ?? []
    }
}

/// An asynchronous event: `{"event": NAME, "data": {...}, "timestamp": {...}}`.
public struct QMPEvent: Sendable, Hashable {
    public var name: String
    /// The event's data object, or `.null` when it has none.
    public var data: JSONValue
    /// QEMU's timestamp in seconds since the epoch.
    public var timestamp: Double
    /// Order of arrival on this connection, from 1.
    public var sequence: UInt64
    /// The whole message as received.
    public var message: JSONObject

    init?(_ message: JSONObject, sequence: UInt64) {
        guard let name = message["event"]?.stringValue else { return nil }
        self.name = name
        self.data = message["data"] ?? .null
        let seconds = message["timestamp"]?["seconds"]?.doubleValue ?? 0
        let microseconds = message["timestamp"]?["microseconds"]?.doubleValue ?? 0
        self.timestamp = seconds + microseconds / 1e6
        self.sequence = sequence
        self.message = message
    }
}

/// A point in a connection's event stream: waits `after` it see only later events.
public struct QMPEventMark: Sendable, Hashable {
    public let sequence: UInt64
}

/// Default reply timeouts by command, so no call waits forever.
public struct QMPTimeouts: Sendable {
    /// `query-*`, `qom-get/list`, `qmp_capabilities`.
    public var query: Duration = .seconds(5)
    /// device_add/device_del, blockdev-add/del, object-add/del.
    public var hotplug: Duration = .seconds(60)
    /// snapshot jobs and HMP savevm/loadvm/delvm.
    public var snapshot: Duration = .seconds(600)
    /// Everything else.
    public var other: Duration = .seconds(30)

    public init() {}

    public func timeout(for command: String, arguments: JSONObject? = nil) -> Duration {
        if command.hasPrefix("query-") || command.hasPrefix("qom-") || command == "qmp_capabilities" { return query }
        switch command {
        case "device_add", "device_del", "blockdev-add", "blockdev-del", "object-add", "object-del", "netdev_add", "netdev_del":
            return hotplug
        case "snapshot-save", "snapshot-load", "snapshot-delete", "job-finalize":
            return snapshot
        case "human-monitor-command":
            let line = arguments?["command-line"]?.stringValue ?? ""
            let verb = line.split(separator: " ").first ?? ""
            return ["savevm", "loadvm", "delvm"].contains(verb) ? snapshot : other
        default:
            return other
        }
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}
