import Platform

/// Binds a device's IOMMU group to vfio-pci and gives it back, the way the
/// kernel documents it: `driver_override`, `unbind`, `drivers_probe`.
///
/// Bind, for the device and every other group member with a host driver
/// (bridges, vfio-pci and pci-stub members left alone):
///
///     echo vfio-pci > /sys/bus/pci/devices/BDF/driver_override
///     echo BDF      > /sys/bus/pci/devices/BDF/driver/unbind      (when bound)
///     echo BDF      > /sys/bus/pci/drivers_probe
///
/// Unbind restores what the state file recorded:
///
///     echo BDF      > /sys/bus/pci/devices/BDF/driver/unbind      (when bound to vfio-pci)
///     echo PREVIOUS > /sys/bus/pci/devices/BDF/driver_override    ("\n" clears it)
///     echo BDF      > /sys/bus/pci/drivers/PREVIOUS/bind          (when there was a driver)
public struct VFIOBinder {
    public struct BindError: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// One device's part of a plan.
    public struct Step: Sendable, Hashable {
        public var address: PCIAddress
        /// What is done and why, e.g. "aic7xxx → vfio-pci".
        public var summary: String
    }

    public var roots: HostRoots
    public var writer: SysfsWriter
    public var store: VFIOBindingStore

    public init(roots: HostRoots = .live, writer: SysfsWriter, store: VFIOBindingStore) {
        self.roots = roots
        self.writer = writer
        self.store = store
    }

    var sysfs: Sysfs { Sysfs(roots: roots) }

    func device(_ address: PCIAddress) throws -> PCIDevice {
        guard let device = sysfs.device(address) else {
            throw BindError(description: "no PCI device \(address) in \(roots.sys("bus/pci/devices")); see 'qlab devices'")
        }
        return device
    }

    /// The group members bind must move to vfio-pci: the device itself unless
    /// already there, and every other member with a host driver that is not
    /// vfio-pci, pci-stub or a bridge's.
    public func membersToBind(_ device: PCIDevice) throws -> [PCIDevice] {
        guard let group = device.iommuGroup else {
            throw BindError(description: "\(device.address) has no IOMMU group: enable the IOMMU first (qlab doctor --setup-plan)")
        }
        var members: [PCIDevice] = []
        for address in sysfs.groupMembers(group) {
            guard let member = address == device.address ? device : sysfs.device(address) else { continue }
            if member.driver == "vfio-pci" { continue }
            if address == device.address {
                if member.isBridge { throw BindError(description: "\(address) is a bridge; pass through the card behind it instead") }
                members.append(member)
            } else if let driver = member.driver, driver != "pci-stub", !member.isBridge {
                members.append(member)
            }
        }
        return members
    }

    /// Moves the device's group to vfio-pci. Refuses a device (or group member)
    /// that carries a mounted filesystem, the console or the default route unless
    /// `force`. Records the previous drivers unless the writer is a dry run.
    @discardableResult
    public func bind(_ address: PCIAddress, force: Bool = false) throws -> [Step] {
        let device = try device(address)
        let members = try membersToBind(device)
        if !force {
            let usage = DeviceUsage(roots: roots)
            let reasons = members.flatMap { member in usage.reasons(for: member).map { "\(member.address): \($0)" } }
            if !reasons.isEmpty {
                throw BindError(description: "refusing to take \(reasons.count == 1 ? "this device" : "these devices") from the host:\n  "
                    + reasons.joined(separator: "\n  ") + "\nuse --force to bind anyway")
            }
        }
        if !members.isEmpty && !sysfs.hasPCIDriver("vfio-pci") && !writer.dryRun {
            throw BindError(description: "vfio-pci is not loaded (\(roots.sys("bus/pci/drivers/vfio-pci")) missing): run 'modprobe vfio-pci' first")
        }
        var records = try store.load()
        var steps: [Step] = []
        for member in members {
            let dir = sysfs.devicePath(member.address)
            try writer.write("vfio-pci", to: dir + "/driver_override")
            if member.driver != nil {
                try writer.write(member.address.description, to: dir + "/driver/unbind")
            }
            try writer.write(member.address.description, to: roots.sys("bus/pci/drivers_probe"))
            steps.append(Step(address: member.address, summary: "\(member.driver ?? "no driver") → vfio-pci"))
            if !records.contains(where: { $0.address == member.address && $0.sysfs == roots.sysfs }) {
                records.append(VFIOBindingStore.Binding(address: member.address, sysfs: roots.sysfs, group: member.iommuGroup,
                    previousDriver: member.driver, previousOverride: member.driverOverride))
            }
        }
        if !writer.dryRun && !steps.isEmpty { try store.save(records) }
        return steps
    }

    /// Gives the device's group back: every member recorded by `bind` returns to its
    /// previous driver (or stays unbound if it had none). A vfio-pci member with no
    /// record has its override cleared and is left for the kernel to probe.
    @discardableResult
    public func unbind(_ address: PCIAddress) throws -> [Step] {
        let device = try device(address)
        let members = device.iommuGroup.map { sysfs.groupMembers($0) } ?? [address]
        var records = try store.load()
        var steps: [Step] = []
        for memberAddress in members {
            guard let member = memberAddress == address ? device : sysfs.device(memberAddress) else { continue }
            let record = records.first { $0.address == memberAddress && $0.sysfs == roots.sysfs }
            guard record != nil || member.driver == "vfio-pci" else { continue }
            let dir = sysfs.devicePath(memberAddress)
            if member.driver == "vfio-pci" {
                try writer.write(memberAddress.description, to: dir + "/driver/unbind")
            }
            try writer.write(record?.previousOverride ?? "\n", to: dir + "/driver_override")
            if let record {
                if let previous = record.previousDriver {
                    let bindPath = roots.sys("bus/pci/drivers/\(previous)/bind")
                    if FileSystem.entryExists(bindPath) {
                        try writer.write(memberAddress.description, to: bindPath)
                    } else {
                        try writer.write(memberAddress.description, to: roots.sys("bus/pci/drivers_probe"))
                    }
                }
                steps.append(Step(address: memberAddress, summary: "\(member.driver ?? "no driver") → \(record.previousDriver ?? "no driver")"))
            } else {
                try writer.write(memberAddress.description, to: roots.sys("bus/pci/drivers_probe"))
                steps.append(Step(address: memberAddress, summary: "vfio-pci → kernel's choice (no record of the previous driver)"))
            }
            records.removeAll { $0.address == memberAddress && $0.sysfs == roots.sysfs }
        }
        if !writer.dryRun && !steps.isEmpty { try store.save(records) }
        return steps
    }
}
