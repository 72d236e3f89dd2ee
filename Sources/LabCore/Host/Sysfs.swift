import Platform

/// Reads the PCI, IOMMU and module files under a sysfs root, laid out as the
/// kernel lays them out:
///
///     bus/pci/devices/BDF -> ../../../devices/pci0000:00/.../BDF
///     devices/.../BDF/driver -> ../../../bus/pci/drivers/NAME
///     devices/.../BDF/iommu_group -> ../../../kernel/iommu_groups/N
///     kernel/iommu_groups/N/devices/BDF -> ../../../../devices/.../BDF
///     module/vfio_pci/parameters/nointxmask
///     class/iommu/NAME
public struct Sysfs: Sendable {
    public var roots: HostRoots

    public init(roots: HostRoots) { self.roots = roots }

    public var root: String { roots.sysfs }

    /// `bus/pci/devices/BDF`: the link the kernel keeps for every function.
    public func devicePath(_ address: PCIAddress) -> String {
        roots.sys("bus/pci/devices/\(address)")
    }

    /// The addresses in `bus/pci/devices`, sorted.
    public func deviceAddresses() -> [PCIAddress] {
        (HostFiles.list(roots.sys("bus/pci/devices")) ?? []).compactMap(PCIAddress.init).sorted()
    }

    public func devices() -> [PCIDevice] {
        deviceAddresses().compactMap(device)
    }

    /// Reads one function's attributes; `nil` when it is not in `bus/pci/devices`.
    public func device(_ address: PCIAddress) -> PCIDevice? {
        let dir = devicePath(address)
        guard FileSystem.entryExists(dir) else { return nil }
        func value(_ name: String) -> String? { HostFiles.readValue(dir + "/" + name) }
        func hex(_ name: String) -> UInt64? { value(name).flatMap { PCIDeviceIDs.hexValue($0) } }

        let config = PCIConfigSpace(bytes: HostFiles.readBytes(dir + "/config", limit: 4096) ?? [])
        let vendor = hex("vendor").flatMap { UInt16(exactly: $0) } ?? config.vendorID ?? 0xFFFF
        let deviceID = hex("device").flatMap { UInt16(exactly: $0) } ?? config.deviceID ?? 0xFFFF
        let classCode = hex("class").flatMap { UInt32(exactly: $0) } ?? 0
        let revision = hex("revision").flatMap { UInt8(exactly: $0) } ?? config.revision ?? 0
        let override = value("driver_override").flatMap { $0 == "(null)" || $0.isEmpty ? nil : $0 }
        let group = HostFiles.linkName(dir + "/iommu_group").flatMap { Int($0) }
        let resetMethods = value("reset_method").map { $0.split(separator: " ").map(String.init) }

        var romResource: (UInt64, UInt64)?
        if let lines = HostFiles.readText(dir + "/resource")?.split(separator: "\n"), lines.count > 6 {
            let fields = lines[6].split(separator: " ")
            if fields.count >= 2, let start = PCIDeviceIDs.hexValue(fields[0]), let end = PCIDeviceIDs.hexValue(fields[1]) {
                romResource = (start, end)
            }
        }

        let real = HostFiles.realPath(dir)
        let sysReal = HostFiles.realPath(root) ?? root
        var relative = real ?? dir
        if relative.hasPrefix(sysReal + "/") { relative.removeFirst(sysReal.count + 1) }
        let upstream = relative.split(separator: "/").dropLast().compactMap { PCIAddress(String($0)) }

        return PCIDevice(
            address: address, vendorID: vendor, deviceID: deviceID, classCode: classCode, revision: revision,
            subsystemVendorID: hex("subsystem_vendor").flatMap { UInt16(exactly: $0) },
            subsystemDeviceID: hex("subsystem_device").flatMap { UInt16(exactly: $0) },
            irq: value("irq").flatMap { Int($0) },
            driver: HostFiles.linkName(dir + "/driver"),
            driverOverride: override, iommuGroup: group, resetMethods: resetMethods,
            hasResetFile: FileSystem.entryExists(dir + "/reset"), hasROM: FileSystem.entryExists(dir + "/rom"),
            romResource: romResource, enableCount: value("enable").flatMap { Int($0) },
            isBootVGA: value("boot_vga") == "1", config: config, devicePath: relative, upstream: upstream)
    }

    /// The functions whose vendor and device ids match.
    public func devices(vendor: UInt16, device: UInt16) -> [PCIDevice] {
        devices().filter { $0.vendorID == vendor && $0.deviceID == device }
    }

    /// The group numbers under `kernel/iommu_groups`, sorted; empty when the
    /// IOMMU is off (the directory exists but is empty) or missing.
    public func iommuGroups() -> [Int] {
        (HostFiles.list(roots.sys("kernel/iommu_groups")) ?? []).compactMap { Int($0) }.sorted()
    }

    /// The members of a group: `kernel/iommu_groups/N/devices/*`.
    public func groupMembers(_ group: Int) -> [PCIAddress] {
        (HostFiles.list(roots.sys("kernel/iommu_groups/\(group)/devices")) ?? []).compactMap(PCIAddress.init).sorted()
    }

    /// The IOMMU units in `class/iommu` (dmar0, ivhd0, ...).
    public func iommuUnits() -> [String] {
        HostFiles.list(roots.sys("class/iommu")) ?? []
    }

    /// Whether a module is loaded or built in with sysfs presence (`module/NAME`).
    public func hasModule(_ name: String) -> Bool {
        FileSystem.entryExists(roots.sys("module/\(name)"))
    }

    /// Whether a PCI driver is registered (`bus/pci/drivers/NAME`).
    public func hasPCIDriver(_ name: String) -> Bool {
        FileSystem.entryExists(roots.sys("bus/pci/drivers/\(name)"))
    }

    /// The module a PCI driver lives in (`bus/pci/drivers/NAME/module -> .../module/MOD`);
    /// `nil` when the driver is built into the kernel.
    public func driverModule(_ driver: String) -> String? {
        HostFiles.linkName(roots.sys("bus/pci/drivers/\(driver)/module"))
    }

    /// A module parameter's value, e.g. `module/vfio_pci/parameters/nointxmask` → "N".
    public func moduleParameter(_ module: String, _ parameter: String) -> String? {
        HostFiles.readValue(roots.sys("module/\(module)/parameters/\(parameter)"))
    }

    /// vfio-pci's `nointxmask`: `true` for Y/1, `false` for N/0, `nil` when vfio_pci is not loaded.
    public func vfioNoINTxMask() -> Bool? {
        guard let value = moduleParameter("vfio_pci", "nointxmask") else { return nil }
        return value == "Y" || value == "1"
    }

    /// Resolves a sysfs-relative link (e.g. `class/net/eth0/device`) to a path
    /// relative to the sysfs root, e.g. `devices/pci0000:00/0000:00:03.0/virtio0`.
    public func resolvedRelative(_ relative: String) -> String? {
        guard let real = HostFiles.realPath(roots.sys(relative)) else { return nil }
        let sysReal = HostFiles.realPath(root) ?? root
        guard real.hasPrefix(sysReal + "/") else { return nil }
        return String(real.dropFirst(sysReal.count + 1))
    }
}
