import Platform
import QMP

/// A host card's health as the last health check found it (LAVA's device
/// health, kept small: good or bad). A bad card fails every later run that
/// needs it, fast and with the reason, until `qlab cards --clear-bad ADDR` or
/// a passing `qlab health LAB`.
public struct CardHealth: Sendable, Hashable {
    public enum Status: String, Sendable, Hashable {
        case good, bad
    }

    public var address: String
    public var status: Status
    /// What the check found (the failing test's message, the doctor's failed checks).
    public var reason: String
    /// The lab whose health check decided it, and the check (a test name, or `doctor`).
    public var lab: String
    public var check: String
    /// Seconds since the epoch.
    public var checkedAt: Double

    public init(address: String, status: Status, reason: String, lab: String, check: String, checkedAt: Double = wallClockSeconds()) {
        self.address = address
        self.status = status
        self.reason = reason
        self.lab = lab
        self.check = check
        self.checkedAt = checkedAt
    }

    public var json: JSONValue {
        [
            "status": .string(status.rawValue), "reason": .string(reason), "lab": .string(lab), "check": .string(check),
            "checked_at": .string(formatTimestamp(checkedAt)),
        ]
    }

    var stored: JSONValue {
        [
            "address": .string(address), "status": .string(status.rawValue), "reason": .string(reason), "lab": .string(lab),
            "check": .string(check), "checked_at": .double(checkedAt),
        ]
    }

    init?(stored value: JSONValue) {
        guard let address = value["address"]?.stringValue, let status = value["status"]?.stringValue.flatMap(Status.init(rawValue:)),
            let reason = value["reason"]?.stringValue, let lab = value["lab"]?.stringValue, let check = value["check"]?.stringValue,
            let checkedAt = value["checked_at"]?.doubleValue
        else { return nil }
        self.init(address: address, status: status, reason: reason, lab: lab, check: check, checkedAt: checkedAt)
    }

    /// "bad since 2026-12-07T05:31:07Z: health check smoke of lab bench failed: ...".
    public var description: String {
        "\(status.rawValue) since \(formatTimestamp(checkedAt)) (health check \(check) of lab \(lab)" + (reason.isEmpty ? ")" : ": \(reason))")
    }
}

/// Where card health lives: one JSON file per card, `STATE_ROOT/cards/pci-ADDR.json`
/// (0600, written atomically, in a directory of the user's alone). One file a
/// card: a run updates only the cards it holds (under their locks), so two runs
/// never write one file at once.
public struct CardHealthStore: Sendable {
    public var stateRoot: String
    public var directory: String { stateRoot + "/cards" }

    public init(stateRoot: String) { self.stateRoot = stateRoot }

    /// The state root as every state file's (0700), and `cards` below it.
    func open(create: Bool) throws -> PrivateDirectory? {
        guard let root = try PrivateDirectory.open(stateRoot, role: .state, create: create) else { return nil }
        return try root.subdirectory("cards", create: create)
    }

    public init(environment: [String: String]) { self.init(stateRoot: LabDirectories.stateRoot(environment: environment)) }

    static func fileName(_ address: String) -> String { "pci-\(address).json" }

    public func read(_ address: String) -> CardHealth? {
        guard let dir = (try? open(create: false)) ?? nil, let value = dir.readJSON(Self.fileName(address))
        else { return nil }
        return CardHealth(stored: value)
    }

    /// Every card with a health record, by address.
    public func all() -> [CardHealth] {
        guard let dir = (try? open(create: false)) ?? nil else { return [] }
        let names = dir.names().filter { $0.hasPrefix("pci-") && $0.hasSuffix(".json") }
        return names.compactMap { name in dir.readJSON(name).flatMap { CardHealth(stored: $0) } }
    }

    public func write(_ health: CardHealth) throws {
        guard let dir = try open(create: true) else { throw LabError.system("cannot create \(directory)") }
        try dir.writeJSON(Self.fileName(health.address), health.stored)
    }

    /// Forgets a card's health (`--clear-bad`): true when there was a record.
    @discardableResult
    public func clear(_ address: String) -> Bool {
        guard let dir = (try? open(create: false)) ?? nil, dir.contains(Self.fileName(address)) else { return false }
        dir.remove(Self.fileName(address))
        return true
    }
}
