import QMP

/// One recognised problem in QEMU's or the kernel's error text: what it is,
/// why it happens, and what to do.
public struct Diagnosis: Sendable, Hashable {
    /// A stable id, e.g. `vfio-intx-busy` (the catalog is in ``DiagnosisCatalog``).
    public var id: String
    /// The host PCI address (`0000:03:05.0`) when the text names one.
    public var device: String?
    /// One line.
    public var summary: String
    public var cause: String
    public var fix: String
    /// The line of text the diagnosis was made from (the first, when several lines agreed).
    public var evidence: String

    public init(id: String, device: String? = nil, summary: String, cause: String, fix: String, evidence: String = "") {
        self.id = id
        self.device = device
        self.summary = summary
        self.cause = cause
        self.fix = fix
        self.evidence = evidence
    }

    /// `{"id", "device" (null when none), "summary", "cause", "fix"}`.
    public var json: JSONValue {
        [
            "id": .string(id), "device": device.map { .string($0) } ?? .null, "summary": .string(summary),
            "cause": .string(cause), "fix": .string(fix),
        ]
    }

    /// Reads back ``json`` (reports, exit records).
    public init?(json: JSONValue) {
        guard let id = json["id"]?.stringValue else { return nil }
        self.init(id: id, device: json["device"]?.stringValue, summary: json["summary"]?.stringValue ?? "",
                  cause: json["cause"]?.stringValue ?? "", fix: json["fix"]?.stringValue ?? "")
    }

    /// Human-readable, a few lines.
    public var text: String {
        var lines = ["\(id)\(device.map { " [\($0)]" } ?? ""): \(summary)"]
        lines.append("  cause: \(cause)")
        lines.append("  fix:   \(fix)")
        return lines.joined(separator: "\n")
    }
}

extension Diagnosis {
    /// `{"diagnoses": [...]}`, the shape `qlab diagnose --json` prints.
    public static func json(_ diagnoses: [Diagnosis]) -> JSONValue {
        ["diagnoses": .array(diagnoses.map(\.json))]
    }
}
