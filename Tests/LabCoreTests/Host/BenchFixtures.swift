import LabCore

/// The benches the doctor was built for, as sysfs/procfs trees.
extension SysfsTreeBuilder {
    static let rootPort = PCIAddress.bdf("0000:00:1c.0")
    static let ehci = PCIAddress.bdf("0000:00:1d.0")
    static let pericom = PCIAddress.bdf("0000:02:00.0")

    /// The original bench: a q35-era Intel host with the IOMMU on, a PCIe root port
    /// at 00:1c.0, a Pericom 12d8:e111 PCIe-to-PCI bridge at 02:00.0 and behind it the
    /// Adaptec AHA-2930CU (AIC-7850 9004:5078 rev 3) in `cardSlot` of bus 03 on `irq`.
    /// The EHCI controller at 00:1d.0 sits on IRQ 16 with handler `ehci_hcd:usb1`.
    /// Bridge and card share IOMMU group 7 (no ACS below a PCIe-to-PCI bridge).
    static func originalBench(cardSlot: UInt8 = 4, irq: Int = 16, cardDriver: String? = "aic7xxx") throws -> SysfsTreeBuilder {
        let tree = try SysfsTreeBuilder()
        try tree.addIOMMUUnit("dmar0")
        try tree.addIOMMUUnit("dmar1")
        try tree.loadVFIO()
        try tree.setCommandLine("BOOT_IMAGE=/vmlinuz-6.1.0-13-amd64 root=/dev/sda1 ro quiet intel_iommu=on iommu=pt")
        try tree.add(.init(address: .bdf("0000:00:00.0"), vendor: 0x8086, device: 0x29c0, classCode: 0x060000,
            interruptPin: 0, group: 0))
        try tree.add(.init(address: rootPort, vendor: 0x8086, device: 0x2948, classCode: 0x060400, command: 0x0407,
            status: 0x0010, capabilities: [0x10, 0x05], interruptPin: 1, irq: 24, driver: "pcieport", group: 5,
            secondaryBus: 2))
        try tree.add(.init(address: ehci, vendor: 0x8086, device: 0x293a, classCode: 0x0c0320, command: 0x0006,
            status: 0x0290, capabilities: [0x01, 0x0a], interruptPin: 1, irq: 16, driver: "ehci-pci", group: 6,
            resetMethod: "pm"))
        try tree.add(.init(address: pericom, vendor: 0x12d8, device: 0xe111, classCode: 0x060400, revision: 2,
            command: 0x0007, status: 0x0010, capabilities: [0x01, 0x05, 0x10], interruptPin: 0, group: 7,
            secondaryBus: 3), parent: rootPort)
        try tree.add(.init(address: PCIAddress(bus: 3, slot: cardSlot, function: 0), vendor: 0x9004, device: 0x5078,
            classCode: 0x010000, revision: 3, subsystemVendor: 0x9004, subsystemDevice: 0x7850, command: 0x0007,
            status: 0x0280, interruptPin: 1, irq: irq, driver: cardDriver, group: 7, resetMethod: "bus",
            rom: (start: 0xfe900000, size: 0x8000)), parent: pericom)
        var rows = [InterruptRow(irq: 16, handlers: ["ehci_hcd:usb1"], counts: [1234, 0])]
        if cardDriver == "aic7xxx" {
            if irq == 16 { rows[0].handlers.append("aic7xxx") } else { rows.append(InterruptRow(irq: irq, handlers: ["aic7xxx"])) }
        }
        try tree.setInterrupts(rows)
        return tree
    }
}
