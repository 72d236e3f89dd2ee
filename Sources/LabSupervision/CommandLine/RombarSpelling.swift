import Platform

/// How this QEMU spells vfio-pci's `rombar`: a number (`rombar=0`; QEMU 7.2
/// has `<uint32>`, 10.0 `<int32>` with -1 for auto, and both refuse `off`),
/// or on/off/auto where QEMU made it an OnOffAuto property (`rombar=off`).
/// The spelling of one is refused by the other, so qlab asks the QEMU it
/// runs rather than going by its version number.
public enum RombarSpelling: Sendable, Hashable, Codable {
    /// `rombar=0` / `rombar=1` (QEMU 7.2 here: `rombar=<uint32>`).
    case number
    /// `rombar=off` / `rombar=on`.
    case onOff

    /// The spelling from `-device vfio-pci,help` text (`rombar=<uint32>` or `rombar=<OnOffAuto>`).
    public static func parse(help: String) -> RombarSpelling {
        for line in help.split(separator: "\n") where String(line).trimmingSpaces().hasPrefix("rombar=") {
            return line.contains("<uint32>") || line.contains("<int") ? .number : .onOff
        }
        return .number
    }

    /// As kept in the lab record: `number` or `on_off`.
    public var name: String {
        switch self {
        case .number: return "number"
        case .onOff: return "on_off"
        }
    }

    public init?(name: String) {
        switch name {
        case "number": self = .number
        case "on_off": self = .onOff
        default: return nil
        }
    }

    public init(from decoder: any Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        guard let spelling = RombarSpelling(name: name) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "rombar spelling '\(name)' is not number or on_off"))
        }
        self = spelling
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(name)
    }
}
