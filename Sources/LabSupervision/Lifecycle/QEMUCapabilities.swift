#if canImport(Glibc)
import Glibc
#endif

/// What qlab asked the QEMU binary it runs, where the answer changes the
/// command line or what a lab may do: asked of the binary itself, not
/// inferred from its version.
public struct QEMUCapabilities: Sendable, Hashable, Codable {
    /// How this QEMU spells vfio-pci's `rombar`.
    public var rombar: RombarSpelling
    /// Whether a second `dc390` hotplug into one QEMU process works
    /// (``SecondDC390Plug``); asked only of labs that hotplug a `dc390`.
    public var secondDC390Plug: SecondDC390Plug

    enum CodingKeys: String, CodingKey {
        case rombar
        case secondDC390Plug = "second_dc390_plug"
    }

    public init(rombar: RombarSpelling = .number, secondDC390Plug: SecondDC390Plug = .notAsked) {
        self.rombar = rombar
        self.secondDC390Plug = secondDC390Plug
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        rombar = try container.decodeIfPresent(RombarSpelling.self, forKey: .rombar) ?? .number
        // Records and caches written before this was asked have no such key.
        secondDC390Plug = try container.decodeIfPresent(SecondDC390Plug.self, forKey: .secondDC390Plug) ?? .notAsked
    }
}
