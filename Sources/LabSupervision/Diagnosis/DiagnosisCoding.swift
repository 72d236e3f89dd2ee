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
