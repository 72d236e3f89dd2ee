import Testing
import QMP
@testable import LabCore
import Platform

@Suite struct HostSysfsTests {
    @Test func readsDeviceThroughKernelSymlinks() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        let sysfs = Sysfs(roots: tree.roots)
        let card = try #require(sysfs.device(.bdf("0000:03:04.0")))
        #expect(card.vendorID == 0x9004 && card.deviceID == 0x5078)
        #expect(card.revision == 3)
        #expect(card.classCode == 0x010000)
        #expect(card.driver == "aic7xxx")
        #expect(card.iommuGroup == 7)
        #expect(card.irq == 16)
        #expect(card.interruptPin == 1)
        #expect(card.upstream == [.bdf("0000:00:1c.0"), .bdf("0000:02:00.0")])
        #expect(card.devicePath == "devices/pci0000:00/0000:00:1c.0/0000:02:00.0/0000:03:04.0")
        #expect(card.resetMethods == ["bus"])
        #expect(card.hasROM)
        #expect(card.romResource?.start == 0xfe900000)
        #expect(!card.isBridge)
        #expect(card.config.hasPCIExpressCapability == false)
        let bridge = try #require(sysfs.device(.bdf("0000:02:00.0")))
        #expect(bridge.isBridge)
        #expect(bridge.config.secondaryBus == 3)
        #expect(bridge.config.capabilityIDs == [0x01, 0x05, 0x10])
        #expect(bridge.driver == nil)
        #expect(sysfs.groupMembers(7) == [.bdf("0000:02:00.0"), .bdf("0000:03:04.0")])
        #expect(sysfs.iommuGroups() == [0, 5, 6, 7])
        #expect(sysfs.iommuUnits() == ["dmar0", "dmar1"])
        #expect(sysfs.vfioNoINTxMask() == false)
        #expect(sysfs.devices(vendor: 0x9004, device: 0x5078).map(\.address) == [.bdf("0000:03:04.0")])
    }

    @Test func parsesProcInterruptsAsTheKernelPrintsIt() {
        let text = """
                       CPU0       CPU1       CPU2       CPU3
              0:         35          0          0          0   IO-APIC   2-edge      timer
             16:       1234          0          7          0   IO-APIC  16-fasteoi   ehci_hcd:usb1, aic7xxx
             17:          0          0          0          0  IR-IO-APIC   17-fasteoi   vfio-intx(0000:03:05.0)
             24:          0          0          0          0  PCI-MSI 458752-edge      PCIe PME, pciehp
            NMI:          0          0          0          0   Non-maskable interrupts
            ERR:          0
            """
        let table = InterruptTable(parsing: text)
        #expect(table.cpus == ["CPU0", "CPU1", "CPU2", "CPU3"])
        let sixteen = table.line(irq: 16)
        #expect(sixteen?.counts == [1234, 0, 7, 0])
        #expect(sixteen?.chip == "IO-APIC")
        #expect(sixteen?.hardwareIRQ == "16-fasteoi")
        #expect(sixteen?.handlers == ["ehci_hcd:usb1", "aic7xxx"])
        #expect(table.line(irq: 17)?.chip == "IR-IO-APIC")
        #expect(table.line(irq: 17)?.handlers == ["vfio-intx(0000:03:05.0)"])
        #expect(table.line(irq: 24)?.handlers == ["PCIe PME", "pciehp"])
        #expect(table.line(irq: 0)?.handlers == ["timer"])
        #expect(table.lines.first { $0.name == "NMI" }?.handlers == [])
        #expect(table.line(irq: 18) == nil)
    }

    @Test func parsesOldKernelInterruptFormat() {
        let text = """
                       CPU0
             16:      20514   IO-APIC-fasteoi   uhci_hcd:usb3, aic7xxx
            """
        let line = InterruptTable(parsing: text).line(irq: 16)
        #expect(line?.chip == "IO-APIC-fasteoi")
        #expect(line?.hardwareIRQ == nil)
        #expect(line?.handlers == ["uhci_hcd:usb3", "aic7xxx"])
    }

    @Test func treeBuilderInterruptsParseBack() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        let table = try #require(Procfs(roots: tree.roots).interrupts())
        #expect(table.cpus == ["CPU0", "CPU1"])
        #expect(table.line(irq: 16)?.handlers == ["ehci_hcd:usb1", "aic7xxx"])
        #expect(table.line(irq: 16)?.counts == [1234, 0])
    }

    @Test func swizzlesPinsPerBridgeLevel() {
        // INTA in slot 4 stays INTA at the bridge; slot 5 becomes INTB.
        #expect(INTxSwizzle.swizzle(pin: 1, slot: 4) == 1)
        #expect(INTxSwizzle.swizzle(pin: 1, slot: 5) == 2)
        #expect(INTxSwizzle.swizzle(pin: 4, slot: 1) == 1)
        #expect(INTxSwizzle.swizzle(pin: 0, slot: 3) == 0)
        // Behind two bridges: slot 5 (INTB), then the bridge in slot 1 of its bus: INTC.
        #expect(INTxSwizzle.pinAtRoot(pin: 1, slots: [5, 1]) == 3)
        let groups = INTxSwizzle.slotsByBridgePin(pin: 1)
        #expect(groups[1]?.prefix(3) == [0, 4, 8])
        #expect(groups[2]?.prefix(3) == [1, 5, 9])
        #expect(groups.values.map(\.count).reduce(0, +) == 32)
    }

    @Test func parsesSelectorsAndSizes() {
        #expect(DeviceSelector("0000:03:04.0") == .address(.bdf("0000:03:04.0")))
        #expect(DeviceSelector("03:05.0") == .address(.bdf("0000:03:05.0")))
        #expect(DeviceSelector("9004:5078") == .ids(vendor: 0x9004, device: 0x5078))
        #expect(DeviceSelector("1000:0012") == .ids(vendor: 0x1000, device: 0x0012))
        #expect(DeviceSelector("aic7xxx") == nil)
        #expect(ByteSize(parsing: "512M")?.bytes == 512 << 20)
        #expect(ByteSize(parsing: "2G")?.bytes == 2 << 30)
        #expect(ByteSize(parsing: "1024")?.bytes == 1024 << 20)
        #expect(ByteSize(parsing: "4GiB")?.bytes == 4 << 30)
        #expect(ByteSize(parsing: "lots") == nil)
        #expect(ByteSize(parsing: "1.5G")?.bytes == 3 << 29)  // the lab file's spelling works for --memory too
        #expect(ByteSize(bytes: 512 << 20).humanReadable == "512 MiB")
        #expect(ByteSize(bytes: (2 << 30) + (64 << 20)).humanReadable == "2112 MiB")
        #expect(ByteSize(bytes: 1536).humanReadable == "1.5 KiB")
        #expect(ByteSize(bytes: 1000).humanReadable == "1000 B")
    }

    @Test func readsProcessLimitsAndRoutes() throws {
        let tree = try SysfsTreeBuilder()
        try tree.setMemlock(64 << 20)
        try tree.setCapEff(1 << 14)
        let procfs = Procfs(roots: tree.roots)
        #expect(procfs.memlockLimit().bytes == 64 << 20)
        #expect(procfs.hasIPCLock())
        try tree.setMemlock(nil)
        try tree.setCapEff(0)
        #expect(procfs.memlockLimit().bytes == nil)
        #expect(!procfs.hasIPCLock())
        #expect(procfs.cpuVendor() == "GenuineIntel")
        try tree.setMounts(["/dev/sda1 /mnt/with\\040space ext4 rw 0 0"])
        #expect(procfs.mounts().last?.mountPoint == "/mnt/with space")
    }
}

/// Read-only checks against this machine's kernel, to keep the fixtures honest:
/// the readers must understand the real layout the trees imitate. Nothing is written.
@Suite struct HostLiveReadTests {
    @Test(.enabled(if: FileSystem.entryExists("/proc/interrupts"))) func parsesThisKernelsProcInterrupts() throws {
        let table = try #require(Procfs(roots: .live).interrupts())
        #expect(!table.cpus.isEmpty)
        let numbered = table.lines.filter { $0.irq != nil }
        #expect(!numbered.isEmpty)
        for line in numbered {
            #expect(line.counts.count == table.cpus.count, "\(line.name): \(line.counts)")
            #expect(!line.chip.isEmpty, "\(line.name)")
            #expect(line.chip.first?.isNumber == false, "\(line.name): chip \(line.chip)")
        }
    }

    @Test(.enabled(if: !(HostFiles.list("/sys/bus/pci/devices") ?? []).isEmpty)) func readsThisKernelsPCIDevices() throws {
        let sysfs = Sysfs(roots: .live)
        let devices = sysfs.devices()
        #expect(devices.count == HostFiles.list("/sys/bus/pci/devices")?.count)
        for device in devices {
            #expect(device.devicePath.hasPrefix("devices/pci"), "\(device.devicePath)")
            #expect(device.devicePath.hasSuffix(device.address.description))
            #expect(device.vendorID != 0xFFFF)
            #expect(device.config.vendorID == device.vendorID, "config space and the vendor file agree")
            if let driver = device.driver { #expect(sysfs.hasPCIDriver(driver)) }
        }
    }
}
