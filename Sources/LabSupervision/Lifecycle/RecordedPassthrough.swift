/// One passthrough device of ``LabRecord/passthroughHosts``: `{"device": ..., "host": "0000:01:00.0"}`.
public struct RecordedPassthrough: Sendable, Hashable, Codable {
    public var device: String
    public var host: String

    public init(device: String, host: String) {
        self.device = device
        self.host = host
    }
}
