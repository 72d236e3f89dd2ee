/// Which PCI devices a check or a lab means: one address, or every function
/// with a vendor:device pair.
public enum DeviceSelector: Sendable, Hashable, CustomStringConvertible {
    case address(PCIAddress)
    case ids(vendor: UInt16, device: UInt16)

    /// Parses a BDF (`0000:03:04.0`, `03:04.0`) or ids (`9004:5078`).
    public init?(_ text: String) {
        if let address = PCIAddress(text) {
            self = .address(address)
        } else if let ids = PCIDeviceIDs.parse(text) {
            self = .ids(vendor: ids.vendor, device: ids.device)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .address(let address): address.description
        case .ids(let vendor, let device): PCIDeviceIDs.format(vendor, device)
        }
    }

    /// The devices under `sysfs` it selects, sorted by address.
    public func resolve(in sysfs: Sysfs) -> [PCIDevice] {
        switch self {
        case .address(let address): sysfs.device(address).map { [$0] } ?? []
        case .ids(let vendor, let device): sysfs.devices(vendor: vendor, device: device)
        }
    }
}
