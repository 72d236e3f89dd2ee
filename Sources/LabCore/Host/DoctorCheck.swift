import QMP

/// One finding of the host doctor: a stable id, a status, what was read and what to do.
public struct DoctorCheck: Sendable, Hashable {
    public enum Status: String, Sendable, Hashable, CaseIterable {
        case pass, warn, fail, skip
    }

    /// Stable ids: `iommu-enabled`, `vfio-module`, `vfio-nodes`, `memlock` (host);
    /// `device-present`, `iommu-group`, `group-viable`, `driver-bound`, `vfio-nodes`,
    /// `intx-pin`, `irq-assigned`, `intx-masking`, `intx-shared`, `reset`, `rom` (device).
    public var id: String
    public var status: Status
    /// What was read, with the file it came from where that helps.
    public var detail: String
    /// What to do; empty when nothing needs doing.
    public var hint: String

    public init(_ id: String, _ status: Status, _ detail: String, hint: String = "") {
        self.id = id
        self.status = status
        self.detail = detail
        self.hint = hint
    }

    public var json: JSONValue {
        ["id": .string(id), "status": .string(status.rawValue), "detail": .string(detail), "hint": .string(hint)]
    }
}

/// The doctor's findings for the host and each selected device.
public struct DoctorReport: Sendable, Hashable {
    public struct Device: Sendable, Hashable {
        /// The BDF, or the selector as given when no device matched it.
        public var address: String
        public var checks: [DoctorCheck]

        public init(address: String, checks: [DoctorCheck]) {
            self.address = address
            self.checks = checks
        }

        public func check(_ id: String) -> DoctorCheck? { checks.first { $0.id == id } }
    }

    public var host: [DoctorCheck]
    public var devices: [Device]

    public init(host: [DoctorCheck], devices: [Device]) {
        self.host = host
        self.devices = devices
    }

    /// False when any check failed.
    public var ok: Bool { failures.isEmpty }

    /// Every failed check with the device it belongs to (`nil` for host checks).
    public var failures: [(device: String?, check: DoctorCheck)] {
        host.filter { $0.status == .fail }.map { (nil, $0) }
            + devices.flatMap { device in device.checks.filter { $0.status == .fail }.map { (device.address, $0) } }
    }

    public func hostCheck(_ id: String) -> DoctorCheck? { host.first { $0.id == id } }
    public func device(_ address: String) -> Device? { devices.first { $0.address == address } }

    /// `{"ok": bool, "host": [checks], "devices": [{"address": BDF, "checks": [checks]}]}`
    public var json: JSONValue {
        [
            "ok": .bool(ok),
            "host": .array(host.map(\.json)),
            "devices": .array(devices.map { ["address": .string($0.address), "checks": .array($0.checks.map(\.json))] }),
        ]
    }

    /// Plain text for a terminal: one line per check, hints indented below.
    /// With `onlyProblems`, pass and skip lines are left out.
    public func text(onlyProblems: Bool = false) -> String {
        var out = ""
        func add(_ check: DoctorCheck, indent: String) {
            if onlyProblems && (check.status == .pass || check.status == .skip) { return }
            out += indent + check.status.rawValue.uppercased().hostPadded(4) + "  " + check.id.hostPadded(14) + "  " + check.detail + "\n"
            if !check.hint.isEmpty { out += indent + String(repeating: " ", count: 22) + "-> " + check.hint + "\n" }
        }
        out += "host\n"
        for check in host { add(check, indent: "  ") }
        for device in devices {
            out += "device \(device.address)\n"
            for check in device.checks { add(check, indent: "  ") }
        }
        out += ok ? "ok\n" : "\(failures.count) check(s) failed\n"
        return out
    }
}

extension String {
    func hostPadded(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
