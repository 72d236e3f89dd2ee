/// How a lab device is attached to the running VM, as the lab record keeps it
/// (`"state"` of each entry in `lab.json`'s `devices`).
public enum DeviceState: String, Sendable, Hashable, CaseIterable, Codable {
    /// Attached on QEMU's command line when the lab started.
    case boot
    /// Attached by qlab while the lab runs (`qlab hotplug`, a test run, a revert).
    case hotplug
    /// Not attached (a hotplug device before it is plugged, or after an unplug).
    case detached

    /// Whether QEMU has the device (per the record).
    public var isAttached: Bool { self != .detached }
}
