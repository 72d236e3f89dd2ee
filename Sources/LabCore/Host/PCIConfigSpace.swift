/// The bytes of a PCI function's configuration space, as sysfs serves them in
/// the `config` file (256 bytes for conventional PCI, 4096 for PCI Express;
/// an unprivileged reader gets only the first 64).
public struct PCIConfigSpace: Sendable, Hashable {
    public var bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }

    public func byte(_ offset: Int) -> UInt8? {
        bytes.indices.contains(offset) ? bytes[offset] : nil
    }

    public func word(_ offset: Int) -> UInt16? {
        guard let low = byte(offset), let high = byte(offset + 1) else { return nil }
        return UInt16(low) | UInt16(high) << 8
    }

    public var vendorID: UInt16? { word(0x00) }
    public var deviceID: UInt16? { word(0x02) }
    /// The command register (0x04). Bit 10 is Interrupt Disable (PCI 2.3 DisINTx).
    public var command: UInt16? { word(0x04) }
    /// The status register (0x06). Bit 3 is Interrupt Status (PCI 2.3), bit 4 Capabilities List.
    public var status: UInt16? { word(0x06) }
    public var revision: UInt8? { byte(0x08) }
    /// Header type without the multi-function bit: 0 device, 1 PCI-PCI bridge, 2 CardBus bridge.
    public var headerType: UInt8? { byte(0x0E).map { $0 & 0x7F } }
    /// Interrupt line (0x3C): the IRQ the firmware wrote; Linux reports its own in `irq`.
    public var interruptLine: UInt8? { byte(0x3C) }
    /// Interrupt pin (0x3D): 0 none, 1 INTA ... 4 INTD.
    public var interruptPin: UInt8? { byte(0x3D) }
    /// For a bridge (header type 1): the secondary bus number (0x19).
    public var secondaryBus: UInt8? { headerType == 1 ? byte(0x19) : nil }

    public static let commandInterruptDisable: UInt16 = 1 << 10
    public static let statusInterruptStatus: UInt16 = 1 << 3
    public static let statusCapabilitiesList: UInt16 = 1 << 4
    public static let capabilityPCIExpress: UInt8 = 0x10

    /// The capability ids on the standard capability list (pointer at 0x34),
    /// in list order; empty when the status register has no capability list.
    public var capabilityIDs: [UInt8] {
        guard let status, status & Self.statusCapabilitiesList != 0, var pointer = byte(0x34) else { return [] }
        var ids: [UInt8] = []
        var seen = Set<UInt8>()
        while pointer >= 0x40, !seen.contains(pointer), let id = byte(Int(pointer & 0xFC)),
            let next = byte(Int(pointer & 0xFC) + 1)
        {
            seen.insert(pointer)
            ids.append(id)
            pointer = next
        }
        return ids
    }

    /// True when the function has a PCI Express capability; PCI Express requires
    /// the Interrupt Disable bit, so such a function can mask INTx.
    public var hasPCIExpressCapability: Bool { capabilityIDs.contains(Self.capabilityPCIExpress) }

    /// A pin number as the spec names it: 1 → "INTA".
    public static func pinName(_ pin: UInt8) -> String {
        switch pin {
        case 1: "INTA"
        case 2: "INTB"
        case 3: "INTC"
        case 4: "INTD"
        default: "none"
        }
    }
}
