import Platform

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

/// A diagnosis as exit records and reports keep it (its evidence line is not kept).
extension Diagnosis: Codable {
    enum CodingKeys: String, CodingKey {
        case id, device, summary, cause, fix
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            id: try c.decode(String.self, forKey: .id), device: try c.decodeIfPresent(String.self, forKey: .device),
            summary: try c.decodeIfPresent(String.self, forKey: .summary) ?? "",
            cause: try c.decodeIfPresent(String.self, forKey: .cause) ?? "", fix: try c.decodeIfPresent(String.self, forKey: .fix) ?? "")
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encodeIfPresent(device, forKey: .device)
        try c.encode(summary, forKey: .summary)
        try c.encode(cause, forKey: .cause)
        try c.encode(fix, forKey: .fix)
    }
}
