import Platform
import QMP

/// `last-exit.json`: how QEMU ended, written by the supervisor (or by `down`
/// when the supervisor was gone).
public struct ExitRecord: Sendable {
    /// nil when unknown (QEMU was not our child any more).
    public var exit: ProcessExit?
    public var at: Double
    /// True when `down` (or the foreground supervisor's signal) asked for it.
    public var requested: Bool
    /// QEMU's stderr from this run, tail.
    public var qemuOutput: String
    public var diagnoses: [Diagnosis]

    public init(exit: ProcessExit?, at: Double, requested: Bool, qemuOutput: String, diagnoses: [Diagnosis]) {
        self.exit = exit
        self.at = at
        self.requested = requested
        self.qemuOutput = qemuOutput
        self.diagnoses = diagnoses
    }

    /// A crash: QEMU ended on its own with a signal or a failure status.
    public var crashed: Bool {
        guard !requested else { return false }
        switch exit {
        case .exited(0): return false
        case nil: return true
        default: return true
        }
    }

    public var exitDescription: String { exit?.description ?? "ended while unsupervised (status unknown)" }

    /// The record as `last-exit.json` holds it (``JSONValueEncoder``, coded below).
    public var json: JSONValue {
        (try? JSONValueEncoder().encode(self)) ?? .null
    }

    public init?(_ json: JSONValue) {
        guard let record = try? JSONValueDecoder().decode(ExitRecord.self, from: json) else { return nil }
        self = record
    }
}

/// `last-exit.json` through ``JSONValueEncoder``: the exit is kept as
/// `exit_code` (null when unknown) or `signal` + `signal_name`, with its
/// description, as before.
extension ExitRecord: Codable {
    enum CodingKeys: String, CodingKey {
        case at, requested, signal, description, diagnoses
        case exitCode = "exit_code"
        case signalName = "signal_name"
        case qemuOutput = "qemu_output"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let signal = try c.decodeIfPresent(Int64.self, forKey: .signal) {
            exit = .signaled(Int32(clamping: signal))
        } else if let code = try c.decodeIfPresent(Int64.self, forKey: .exitCode) {
            exit = .exited(Int32(clamping: code))
        } else {
            exit = nil
        }
        at = try c.decodeIfPresent(Double.self, forKey: .at) ?? 0
        requested = try c.decodeIfPresent(Bool.self, forKey: .requested) ?? false
        qemuOutput = try c.decodeIfPresent(String.self, forKey: .qemuOutput) ?? ""
        diagnoses = try c.decodeIfPresent([Diagnosis].self, forKey: .diagnoses) ?? []
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(at, forKey: .at)
        try c.encode(requested, forKey: .requested)
        switch exit {
        case .exited(let code): try c.encode(code, forKey: .exitCode)
        case .signaled(let signal):
            try c.encode(signal, forKey: .signal)
            try c.encode(signalName(signal), forKey: .signalName)
        case nil: try c.encodeNil(forKey: .exitCode)
        }
        try c.encode(exitDescription, forKey: .description)
        try c.encode(qemuOutput, forKey: .qemuOutput)
        try c.encode(diagnoses, forKey: .diagnoses)
    }
}
