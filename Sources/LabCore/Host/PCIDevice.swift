/// One PCI function as sysfs describes it, read once.
public struct PCIDevice: Sendable, Hashable {
    public var address: PCIAddress
    public var vendorID: UInt16
    public var deviceID: UInt16
    /// The 24-bit class code: base class, subclass, programming interface.
    public var classCode: UInt32
    public var revision: UInt8
    public var subsystemVendorID: UInt16?
    public var subsystemDeviceID: UInt16?
    /// The kernel's IRQ for the device (`irq`); 0 when none is routed.
    public var irq: Int?
    /// The bound driver's name (from the `driver` link), `nil` when unbound.
    public var driver: String?
    /// `driver_override`, `nil` when unset (the kernel prints "(null)").
    public var driverOverride: String?
    /// The IOMMU group number (from the `iommu_group` link), `nil` without one.
    public var iommuGroup: Int?
    /// `reset_method` split into words; `nil` when the file does not exist
    /// (kernels before 5.15, or no reset method at all).
    public var resetMethods: [String]?
    /// Whether a `reset` attribute exists (the kernel creates it when some reset works).
    public var hasResetFile: Bool
    /// Whether a `rom` attribute exists (the function has an expansion ROM BAR).
    public var hasROM: Bool
    /// The ROM resource line (index 6 of `resource`): start and end, when known.
    public var romResource: (start: UInt64, end: UInt64)?
    /// `enable`: the kernel's enable count; non-zero while a driver or user has it enabled.
    public var enableCount: Int?
    /// `boot_vga`: 1 for the VGA device the firmware used.
    public var isBootVGA: Bool
    public var config: PCIConfigSpace
    /// The device's directory under /sys/devices, relative to the sysfs root,
    /// e.g. `devices/pci0000:00/0000:00:1c.0/0000:02:00.0/0000:03:04.0`.
    public var devicePath: String
    /// The PCI functions on the path from the root bus down to (not including)
    /// this one: root ports and bridges, outermost first.
    public var upstream: [PCIAddress]

    public var ids: String { PCIDeviceIDs.format(vendorID, deviceID) }
    public var baseClass: UInt8 { UInt8((classCode >> 16) & 0xFF) }
    public var subclass: UInt8 { UInt8((classCode >> 8) & 0xFF) }
    /// A PCI-to-PCI or other bridge (base class 0x06, subclass 0x04 or header type 1).
    public var isBridge: Bool { (baseClass == 0x06 && (subclass == 0x04 || subclass == 0x09)) || config.headerType == 1 }
    public var interruptPin: UInt8 { config.interruptPin ?? 0 }
    /// The bridge directly above, when there is one.
    public var parentBridge: PCIAddress? { upstream.last }

    public static func == (a: PCIDevice, b: PCIDevice) -> Bool {
        a.address == b.address && a.devicePath == b.devicePath && a.config == b.config && a.driver == b.driver
            && a.irq == b.irq && a.iommuGroup == b.iommuGroup
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(address)
        hasher.combine(devicePath)
    }
}

/// `vvvv:dddd` spelling of PCI ids.
public enum PCIDeviceIDs {
    public static func format(_ vendor: UInt16, _ device: UInt16) -> String {
        hex4(vendor) + ":" + hex4(device)
    }

    /// Parses `vvvv:dddd` (hex, optional 0x); `nil` otherwise.
    public static func parse(_ text: String) -> (vendor: UInt16, device: UInt16)? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let vendor = hexValue(parts[0]), let device = hexValue(parts[1]),
            let v = UInt16(exactly: vendor), let d = UInt16(exactly: device)
        else { return nil }
        return (v, d)
    }

    static func hex4<T: BinaryInteger>(_ value: T) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    /// A sysfs hex attribute such as `0x9004`.
    static func hexValue<S: StringProtocol>(_ text: S) -> UInt64? {
        var body = Substring(text)
        if body.hasPrefix("0x") || body.hasPrefix("0X") { body = body.dropFirst(2) }
        guard !body.isEmpty, body.count <= 16 else { return nil }
        return UInt64(body, radix: 16)
    }
}
