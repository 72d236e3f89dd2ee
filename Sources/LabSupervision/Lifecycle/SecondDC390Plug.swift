/// What a QEMU does when a `dc390` is hotplugged into it a second time.
///
/// The DC-390's EEPROM (hw/scsi/esp-pci.c, `eeprom93xx_new`) registers its
/// migration state (`vmstate_register`, section `PCI-PATH/eeprom`) when the
/// card is realized, and nothing unregisters it when the card is unplugged.
/// The next `dc390` realized at the same PCI path registers the same section
/// name again and QEMU aborts in `vmstate_register_with_alias_id`
/// ("Assertion `!se->compat || se->instance_id == 0' failed", SIGABRT).
/// Seen with QEMU 7.2.22 and 10.0.2 (``QEMUCapabilities``' probe asks the
/// binary: plug, unplug, plug again in a paused throw-away QEMU).
public enum SecondDC390Plug: Sendable, Hashable, Codable {
    /// Not asked: the lab hotplugs no `dc390`.
    case notAsked
    /// The probe's second plug worked.
    case works(version: String)
    /// The probe's QEMU aborted on the second plug.
    case aborts(version: String)
    /// The probe could not tell (no `dc390` in this QEMU, it failed to start, ...).
    case unknown(reason: String)

    /// `true` only when the probe saw QEMU abort.
    public var aborts: Bool {
        if case .aborts = self { return true }
        return false
    }

    /// The QEMU version the probe reported (`query-version`'s `qemu` and `package`).
    public var version: String? {
        switch self {
        case .works(let version), .aborts(let version): return version
        case .notAsked, .unknown: return nil
        }
    }

    enum CodingKeys: String, CodingKey { case result, version, reason }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let result = try container.decode(String.self, forKey: .result)
        switch result {
        case "not_asked": self = .notAsked
        case "works": self = .works(version: try container.decodeIfPresent(String.self, forKey: .version) ?? "")
        case "aborts": self = .aborts(version: try container.decodeIfPresent(String.self, forKey: .version) ?? "")
        case "unknown": self = .unknown(reason: try container.decodeIfPresent(String.self, forKey: .reason) ?? "")
        default:
            throw DecodingError.dataCorruptedError(
                forKey: .result, in: container, debugDescription: "second dc390 plug result '\(result)' is not not_asked, works, aborts or unknown")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .notAsked: try container.encode("not_asked", forKey: .result)
        case .works(let version):
            try container.encode("works", forKey: .result)
            try container.encode(version, forKey: .version)
        case .aborts(let version):
            try container.encode("aborts", forKey: .result)
            try container.encode(version, forKey: .version)
        case .unknown(let reason):
            try container.encode("unknown", forKey: .result)
            try container.encode(reason, forKey: .reason)
        }
    }
}
