/// A PCI device address in the kernel's sysfs spelling, `DDDD:BB:SS.F`
/// (domain, bus, slot/device, function), as in /sys/bus/pci/devices.
public struct PCIAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var domain: UInt16
    public var bus: UInt8
    public var slot: UInt8
    public var function: UInt8

    public init(domain: UInt16 = 0, bus: UInt8, slot: UInt8, function: UInt8) {
        self.domain = domain
        self.bus = bus
        self.slot = slot
        self.function = function
    }

    /// Parses `DDDD:BB:SS.F` or the short `BB:SS.F` (domain 0), as lspci prints it.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let domainText: Substring, busText: Substring, rest: Substring
        switch parts.count {
        case 3: (domainText, busText, rest) = (parts[0], parts[1], parts[2])
        case 2: (domainText, busText, rest) = ("0000", parts[0], parts[1])
        default: return nil
        }
        let slotFunction = rest.split(separator: ".", omittingEmptySubsequences: false)
        guard slotFunction.count == 2,
            domainText.count <= 4, busText.count == 2, slotFunction[0].count == 2, slotFunction[1].count == 1,
            let domain = UInt16(domainText, radix: 16), let bus = UInt8(busText, radix: 16),
            let slot = UInt8(slotFunction[0], radix: 16), slot < 32,
            let function = UInt8(slotFunction[1], radix: 16), function < 8
        else { return nil }
        self.init(domain: domain, bus: bus, slot: slot, function: function)
    }

    /// The sysfs spelling, e.g. `0000:03:05.0`.
    public var description: String {
        hex(domain, 4) + ":" + hex(bus, 2) + ":" + hex(slot, 2) + "." + String(function, radix: 16)
    }

    public static func < (a: PCIAddress, b: PCIAddress) -> Bool {
        (a.domain, a.bus, a.slot, a.function) < (b.domain, b.bus, b.slot, b.function)
    }

    private func hex<T: BinaryInteger>(_ value: T, _ width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
