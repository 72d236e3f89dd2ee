/// The device dimension of a run (`matrix: {devices: ...}` in the lab file,
/// docs/lab-format.md): each entry has one device of the lab's matrix, and
/// only that one of them is in the guest. What an entry's guest has is
/// decided here, once, for the one-job loop and `--jobs` workers alike:
/// - a matrix device the guest takes by hotplug is plugged for the entries
///   that have it (``hotplugDevices(for:device:)``);
/// - a matrix device attached at boot for the guest (an OS without hotplug,
///   such as `os: grub`, or `attach: boot`) is on QEMU's command line only
///   in the boots of the entries that have it (``devicesLeftOut(for:device:)``):
///   the loop boots the guest again when the next entry's device differs.
/// Devices the matrix does not list are attached as they are without one.
extension Lab {
    /// The lab's devices a boot of `guest` for an entry with `device` leaves
    /// off QEMU's command line: the matrix's boot-attached devices other than
    /// `device`. Empty without a device dimension.
    public func devicesLeftOut(for guest: LabGuest, device: String?) -> [String] {
        guard !matrixDevices.isEmpty else { return [] }
        return devices.filter { matrixDevices.contains($0.name) && $0.name != device && effectiveAttach(of: $0, for: guest) == .boot }.map(\.name)
    }

    /// The hotplug devices of `guest` an entry with `device` plugs: every one
    /// the matrix does not list, and `device`.
    public func hotplugDevices(for guest: LabGuest, device: String?) -> [String] {
        hotplugDevices(for: guest).map(\.name).filter { !matrixDevices.contains($0) || $0 == device }
    }

    /// True when `guest` boots once per device of the matrix (a matrix device is attached at boot).
    public func bootsPerDevice(_ guest: LabGuest) -> Bool {
        devices.contains { matrixDevices.contains($0.name) && effectiveAttach(of: $0, for: guest) == .boot }
    }
}

extension TestRunner {
    /// The hook environment of an entry's device: its name (`QLAB_DEVICE`,
    /// empty without a device dimension) and, for a passthrough card, its
    /// host PCI address as the launch resolved it (`QLAB_DEVICE_HOST`).
    func deviceEnvironment(_ entry: TestRunEntry, booted: BootedGuest) -> [String: String] {
        let host = entry.device.flatMap { device in booted.session.record.passthroughHosts.first { $0.device == device }?.host }
        return ["QLAB_DEVICE": entry.device ?? "", "QLAB_DEVICE_HOST": host ?? ""]
    }
}
