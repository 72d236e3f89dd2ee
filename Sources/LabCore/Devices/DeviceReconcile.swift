
extension LabSession {
    /// Makes the lab record agree with QEMU about which lab devices are
    /// attached, before a device or snapshot command relies on it.
    ///
    /// A `hotplug`, `unplug` or snapshot command killed between its QMP step
    /// and its record write (or a reset that completed a pending unplug)
    /// leaves the record saying `hotplug` for a card QEMU no longer has, or
    /// `detached` for one it has. QEMU's `/machine/peripheral` (every device
    /// created with an id; lab devices use their name) is the truth: a device
    /// missing there is `detached`; one present that the record calls
    /// `detached` is `hotplug`. Returns the devices whose state changed.
    @discardableResult
    public func reconcileDeviceStates() async throws -> [(device: String, from: DeviceState, to: DeviceState)] {
        let present = try await peripheralIDs()
        var changes: [(device: String, from: DeviceState, to: DeviceState)] = []
        for device in lab.devices {
            let state = currentDeviceState(device.name) ?? .detached
            let attached = state.isAttached
            if attached && !present.contains(device.name) {
                changes.append((device.name, state, .detached))
            } else if !attached && present.contains(device.name) {
                changes.append((device.name, state, .hotplug))
            }
        }
        try setDeviceStates(changes.map { ($0.device, $0.to) })
        return changes
    }
}
