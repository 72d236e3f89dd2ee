import Platform

/// Whether a PCI function can mask INTx (PCI 2.3 Interrupt Disable, command bit 10),
/// and how that was decided. Without it vfio-pci needs the IRQ line to itself.
public struct INTxMasking: Sendable, Hashable {
    public enum Verdict: String, Sendable, Hashable {
        case yes, no, unknown
    }

    public enum Source: String, Sendable, Hashable {
        /// vfio-pci's `nointxmask` parameter is set.
        case moduleParameter = "nointxmask"
        /// The built-in table of cards known not to mask INTx.
        case table
        /// The kernel's own test, run live: toggle bit 10, read back, restore.
        case probe
        /// Read from config space: bit 10 set, Interrupt Status set, or a PCI Express capability.
        case configSpace = "config"
        case none
    }

    public var verdict: Verdict
    public var source: Source
    public var reason: String
}

/// The kernel's INTx masking test (`pci_intx_mask_broken()` in drivers/pci/probe.c):
/// write the command register with bit 10 flipped, read it back, restore it.
/// Only for a card that is idle and not driven by a host driver, on the live /sys, as root.
public enum INTxMaskProbe {
    /// Returns `true` when bit 10 followed the write (masking works), `false` when it
    /// stayed put (reserved, pre-2.3), `nil` when the config file could not be read or
    /// written. The original command word is always written back.
    public static func run(configPath: String, writer: SysfsWriter) -> Bool? {
        guard let original = readCommand(configPath) else { return nil }
        let toggled = original ^ PCIConfigSpace.commandInterruptDisable
        do {
            try writer.write(littleEndian(toggled), to: configPath, at: 4)
        } catch {
            return nil
        }
        let readBack = readCommand(configPath)
        try? writer.write(littleEndian(original), to: configPath, at: 4)
        guard let readBack else { return nil }
        return (readBack & PCIConfigSpace.commandInterruptDisable) == (toggled & PCIConfigSpace.commandInterruptDisable)
    }

    /// The command word at offset 4: `pread(2)`.
    static func readCommand(_ path: String) -> UInt16? {
        guard let fd = try? FileDescriptor.open(path, .readOnly, options: .closeOnExec) else { return nil }
        defer { fd.closeIgnoringErrors() }
        var bytes: [UInt8] = [0, 0]
        let count = try? bytes.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 4, into: $0) }
        guard count == 2 else { return nil }
        return UInt16(bytes[0]) | UInt16(bytes[1]) << 8
    }

    static func littleEndian(_ word: UInt16) -> [UInt8] { [UInt8(word & 0xFF), UInt8(word >> 8)] }
}
