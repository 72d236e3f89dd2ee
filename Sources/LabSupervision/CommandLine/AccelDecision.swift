
/// Which accelerator QEMU runs with, and why: what `up` and `status` report.
public struct AccelDecision: Sendable, Hashable, CustomStringConvertible, Codable {
    public enum Accelerator: String, Sendable, Hashable, Codable {
        case kvm, tcg
    }

    public var accelerator: Accelerator
    /// One sentence: why this accelerator.
    public var reason: String

    public init(_ accelerator: Accelerator, reason: String) {
        self.accelerator = accelerator
        self.reason = reason
    }

    public var description: String { "\(accelerator.rawValue) (\(reason))" }

    /// As records keep it: `{"accelerator": "tcg", "reason": "..."}`.
    enum CodingKeys: String, CodingKey {
        case accelerator, reason
    }
}
