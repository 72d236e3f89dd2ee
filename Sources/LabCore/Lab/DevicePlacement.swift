/// The two PC machine families qlab builds for.
public enum MachineFamily: String, Sendable, Hashable {
    /// Q35/ICH9 with PCI Express; the root bus `pcie.0` takes no hotplug.
    case q35
    /// i440FX/PIIX3, conventional PCI; the root bus `pci.0` takes ACPI hotplug.
    case pc

    /// `q35`, `pc-q35-7.2`, `pc`, `pc-i440fx-7.2`, `pc-i440fx`.
    public init?(type: String) {
        if type == "q35" || type.hasPrefix("pc-q35") {
            self = .q35
        } else if type == "pc" || type.hasPrefix("pc-i440fx") {
            self = .pc
        } else {
            return nil
        }
    }

    /// The root bus's QEMU id.
    public var rootBus: String { self == .q35 ? "pcie.0" : "pci.0" }
}

/// Where one device sits: a bus id and, when fixed, a slot on it.
public struct PCIPlacement: Sendable, Hashable, CustomStringConvertible {
    public var bus: String
    /// nil: QEMU picks a free slot (only when the lab sets `bus:` without `addr:`).
    public var addr: PCISlotAddress?

    public init(bus: String, addr: PCISlotAddress?) {
        self.bus = bus
        self.addr = addr
    }

    /// `bus=` and `addr=` properties for `-device`/`device_add`.
    public var properties: [(String, QEMUValue)] {
        var result: [(String, QEMUValue)] = [("bus", .string(bus))]
        if let addr { result.append(("addr", .string(addr.description))) }
        return result
    }

    public var description: String { addr.map { "\(bus) slot \($0)" } ?? bus }
}

/// Where every device of a lab goes on one machine family. The same plan is
/// used at boot and for hotplug, so a card always lands in the same slot
/// (and so on the same interrupt line).
public struct PlacementPlan: Sendable, Hashable {
    public var family: MachineFamily
    /// Bridges qlab adds (none when nothing needs one).
    public var bridges: [QEMUDeviceSpec]
    /// By lab device name.
    public var devices: [String: PCIPlacement]
    /// Where the guest disk's controller goes (virtio-blk-pci, or an AHCI on pc).
    public var guestDisk: PCIPlacement
    public var nic: PCIPlacement

    public func placement(of device: String) -> PCIPlacement? { devices[device] }
}

/// Placement of conventional-PCI cards, measured on QEMU 7.2:
///
/// - q35: `pcie.0` refuses hotplug ("Bus 'pcie.0' does not support
///   hotplugging"), so qlab adds a `pcie-pci-bridge` (id `qlab-pcibr0`) at
///   pcie.0 slot 0x5 and puts the lab's devices behind it, slot 1 upwards in
///   file order. A pcie-pci-bridge always has an SHPC controller (it has no
///   `shpc` property) and takes `device_add` of lsi53c895a/am53c974 at run
///   time; QEMU 7.2's q35 also offers ACPI hotplug for it.
/// - pc: the cards go on `pci.0` directly (ACPI PIIX4 hotplug), slot 5 upwards.
///
/// qlab's own boot devices sit at fixed slots on the root bus: NIC 0x2, guest
/// disk controller 0x3 (pc: slots 0 and 1 are the host bridge and PIIX3;
/// q35: 0x1f is the ICH9 LPC/SATA/SMBus). A lab's `bus:`/`addr:` override it.
public enum DevicePlacement {
    public static let bridgeID = "qlab-pcibr0"
    public static let bridgeSlot = PCISlotAddress(slot: 0x5)
    public static let nicSlot = PCISlotAddress(slot: 0x2)
    public static let diskSlot = PCISlotAddress(slot: 0x3)
    /// The guest agent's virtio-serial controller (`agent: true`), in a slot reserved on both machines.
    public static let agentSlot = PCISlotAddress(slot: 0x4)

    /// Slots of the root bus qlab or the machine itself use.
    static func reservedRootSlots(_ family: MachineFamily) -> Set<UInt8> {
        // 0x1e: the display adapter (`display: vga`).
        family == .q35 ? [0x0, 0x2, 0x3, 0x4, 0x5, 0x1e, 0x1f] : [0x0, 0x1, 0x2, 0x3, 0x4, 0x1e]
    }

    public static func plan(devices: [LabDevice], machineType: String) throws(LabFileError) -> PlacementPlan {
        guard let family = MachineFamily(type: machineType) else {
            throw LabFileError(file: devices.first?.location.file ?? "", keyPath: "machine.type", message: "machine type '\(machineType)' is not supported; use q35 or pc")
        }
        let defaultBus = family == .q35 ? bridgeID : family.rootBus
        var plan = PlacementPlan(
            family: family, bridges: [], devices: [:],
            guestDisk: PCIPlacement(bus: family.rootBus, addr: diskSlot),
            nic: PCIPlacement(bus: family.rootBus, addr: nicSlot))

        // Explicit slots first, so automatic ones go around them.
        var taken: [String: [UInt8: String]] = [:]
        for device in devices where device.addr != nil {
            let bus = device.bus ?? defaultBus
            let addr = device.addr!
            if bus == family.rootBus, reservedRootSlots(family).contains(addr.slot) {
                throw device.location.error(
                    "slot \(addr) of \(bus) is used by qlab or the machine (reserved: \(reservedRootSlots(family).sorted().map { "0x" + String($0, radix: 16) }.joined(separator: ", "))); choose another addr",
                    keyPath: device.location.keyPath + ".addr")
            }
            if let other = taken[bus]?[addr.slot] {
                throw device.location.error("slot \(addr) of \(bus) is already given to '\(other)'; choose another addr", keyPath: device.location.keyPath + ".addr")
            }
            taken[bus, default: [:]][addr.slot] = device.name
        }
        var nextSlot: UInt8 = family == .q35 ? 0x1 : 0x5
        for device in devices {
            if family == .q35, device.bus == family.rootBus, device.attach == .hotplug {
                throw device.location.error(
                    "pcie.0 takes no hotplug on q35 (QEMU: \"Bus 'pcie.0' does not support hotplugging\"); remove bus: to let qlab put the card behind its pcie-pci-bridge, or use attach: boot",
                    keyPath: device.location.keyPath + ".bus")
            }
            let bus = device.bus ?? defaultBus
            var addr = device.addr
            if addr == nil, device.bus == nil {
                while nextSlot < 32, taken[bus]?[nextSlot] != nil || (bus == family.rootBus && reservedRootSlots(family).contains(nextSlot)) {
                    nextSlot += 1
                }
                guard nextSlot < 32 else {
                    throw device.location.error("no free slot left on \(bus); give this device an explicit bus: and addr:")
                }
                addr = PCISlotAddress(slot: nextSlot)
                taken[bus, default: [:]][nextSlot] = device.name
            }
            plan.devices[device.name] = PCIPlacement(bus: bus, addr: addr)
        }
        if family == .q35, plan.devices.values.contains(where: { $0.bus == bridgeID }) {
            plan.bridges.append(
                QEMUDeviceSpec(
                    driver: "pcie-pci-bridge", id: bridgeID,
                    properties: [("bus", .string(family.rootBus)), ("addr", .string(bridgeSlot.description))]))
        }
        return plan
    }
}
