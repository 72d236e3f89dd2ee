/// A small built-in table of PCI ids relevant to qlab's benches: names for
/// `qlab devices`, and which cards are known not to mask INTx. No network
/// lookup and no pci.ids: the table names what the doctor reasons about.
public enum KnownPCIDevices {
    public struct Entry: Sendable, Hashable {
        public var vendor: UInt16
        /// `nil` matches any device of the vendor (used for names only).
        public var device: UInt16?
        public var name: String
        /// Whether the card can mask INTx (PCI 2.3 DisINTx); `nil` when the table does not say.
        public var masksINTx: Bool?
        /// Why the table says so.
        public var note: String?
    }

    public static let entries: [Entry] = [
        // Adaptec AIC-78xx: PCI 2.1-era parallel SCSI chips; bit 10 of the command register is reserved.
        Entry(vendor: 0x9004, device: 0x5078, name: "Adaptec AIC-7850 (AHA-2910/2920/2930)", masksINTx: false,
            note: "pre-PCI 2.3 (AIC-7850, 1990s): command bit 10 is read-only"),
        Entry(vendor: 0x9004, device: 0x5578, name: "Adaptec AIC-7855", masksINTx: false, note: "pre-PCI 2.3 AIC-78xx"),
        Entry(vendor: 0x9004, device: 0x6078, name: "Adaptec AIC-7860", masksINTx: false, note: "pre-PCI 2.3 AIC-78xx"),
        Entry(vendor: 0x9004, device: 0x6178, name: "Adaptec AIC-7861 (AHA-2940AU)", masksINTx: false, note: "pre-PCI 2.3 AIC-78xx"),
        Entry(vendor: 0x9004, device: 0x7078, name: "Adaptec AIC-7870", masksINTx: false, note: "pre-PCI 2.3 AIC-78xx"),
        Entry(vendor: 0x9004, device: 0x7178, name: "Adaptec AHA-2940/2940W", masksINTx: false, note: "pre-PCI 2.3 AIC-78xx"),
        Entry(vendor: 0x9004, device: 0x7278, name: "Adaptec AHA-3940", masksINTx: false, note: "pre-PCI 2.3 AIC-78xx"),
        Entry(vendor: 0x9004, device: 0x7478, name: "Adaptec AHA-2944", masksINTx: false, note: "pre-PCI 2.3 AIC-78xx"),
        Entry(vendor: 0x9004, device: 0x7895, name: "Adaptec AIC-7895", masksINTx: false, note: "pre-PCI 2.3 AIC-78xx"),
        Entry(vendor: 0x9004, device: nil, name: "Adaptec AIC-7xxx"),
        // Kernel quirks (drivers/pci/quirks.c quirk_broken_intx_masking).
        Entry(vendor: 0x1814, device: 0x0601, name: "Ralink RT2800 802.11n", masksINTx: false,
            note: "kernel quirk: broken INTx masking"),
        Entry(vendor: 0x1b7c, device: 0x0004, name: "Ceton InfiniTV4", masksINTx: false,
            note: "kernel quirk: broken INTx masking"),
        // SCSI cards QEMU emulates, and their real counterparts.
        Entry(vendor: 0x1000, device: 0x0012, name: "LSI 53c895a"),
        Entry(vendor: 0x1000, device: 0x0001, name: "LSI 53c810"),
        Entry(vendor: 0x1022, device: 0x2020, name: "AMD Am53c974 (PCscsi)"),
        // Bridges.
        Entry(vendor: 0x12d8, device: 0xe111, name: "Pericom PI7C9X111SL PCIe-to-PCI bridge"),
        Entry(vendor: 0x12d8, device: 0xe110, name: "Pericom PI7C9X110 PCIe-to-PCI bridge"),
        Entry(vendor: 0x12d8, device: nil, name: "Pericom"),
        // QEMU.
        Entry(vendor: 0x1b36, device: 0x000c, name: "QEMU PCIe root port"),
        Entry(vendor: 0x1b36, device: 0x000e, name: "QEMU PCIe-to-PCI bridge"),
        Entry(vendor: 0x1b36, device: 0x0001, name: "QEMU PCI-PCI bridge"),
        Entry(vendor: 0x1b36, device: 0x0008, name: "QEMU PCIe host bridge"),
        Entry(vendor: 0x1b36, device: 0x000d, name: "QEMU XHCI controller"),
        Entry(vendor: 0x1b36, device: nil, name: "Red Hat / QEMU"),
        Entry(vendor: 0x1af4, device: nil, name: "virtio"),
        Entry(vendor: 0x1234, device: 0x1111, name: "QEMU standard VGA"),
        // Intel q35 / i440fx chipset functions as QEMU models them.
        Entry(vendor: 0x8086, device: 0x29c0, name: "Intel 82G33/q35 DRAM controller"),
        Entry(vendor: 0x8086, device: 0x2918, name: "Intel ICH9 LPC"),
        Entry(vendor: 0x8086, device: 0x2922, name: "Intel ICH9 AHCI"),
        Entry(vendor: 0x8086, device: 0x2930, name: "Intel ICH9 SMBus"),
        Entry(vendor: 0x8086, device: 0x1237, name: "Intel 440FX host bridge"),
        Entry(vendor: 0x8086, device: 0x7000, name: "Intel PIIX3 ISA"),
        Entry(vendor: 0x8086, device: 0x7010, name: "Intel PIIX3 IDE"),
        Entry(vendor: 0x8086, device: 0x7113, name: "Intel PIIX4 ACPI"),
        Entry(vendor: 0x8086, device: 0x100e, name: "Intel 82540EM (e1000)"),
        Entry(vendor: 0x8086, device: 0x10d3, name: "Intel 82574L (e1000e)"),
        Entry(vendor: 0x8086, device: nil, name: "Intel"),
        Entry(vendor: 0x1022, device: nil, name: "AMD"),
    ]

    /// The most specific entry for the ids: exact device first, then the vendor-wide one.
    public static func lookup(vendor: UInt16, device: UInt16) -> Entry? {
        entries.first { $0.vendor == vendor && $0.device == device }
            ?? entries.first { $0.vendor == vendor && $0.device == nil }
    }

    /// What the table says about INTx masking for exactly these ids.
    public static func masksINTx(vendor: UInt16, device: UInt16) -> Entry? {
        entries.first { $0.vendor == vendor && $0.device == device && $0.masksINTx != nil }
    }

    /// A name for the class code's base class and subclass.
    public static func className(_ classCode: UInt32) -> String {
        switch classCode >> 8 {
        case 0x0000: "unclassified"
        case 0x0100: "SCSI storage"
        case 0x0101: "IDE"
        case 0x0106: "SATA"
        case 0x0107: "SAS"
        case 0x0108: "NVMe"
        case 0x0200: "Ethernet"
        case 0x0300: "VGA"
        case 0x0403: "audio"
        case 0x0600: "host bridge"
        case 0x0601: "ISA bridge"
        case 0x0604: "PCI bridge"
        case 0x0605: "PCMCIA bridge"
        case 0x0607: "CardBus bridge"
        case 0x0700: "serial"
        case 0x0c03: "USB"
        case 0x0c05: "SMBus"
        default:
            switch classCode >> 16 {
            case 0x01: "storage"
            case 0x02: "network"
            case 0x03: "display"
            case 0x04: "multimedia"
            case 0x06: "bridge"
            case 0x08: "system"
            case 0x0c: "serial bus"
            default: "class " + PCIDeviceIDs.hex4(classCode >> 8)
            }
        }
    }
}
