extension LabSession {
    /// Sets several devices' states in the lab record with one write (the
    /// record is written atomically with an fsync, which the revert loop
    /// should pay once per step, not once per device).
    func setDeviceStates(_ states: [(device: String, state: DeviceState)]) throws {
        guard !states.isEmpty else { return }
        try updateRecord { current in
            for (device, state) in states {
                if let index = current.devices.firstIndex(where: { $0.name == device }) {
                    current.devices[index].state = state
                } else {
                    current.devices.append(RecordedDevice(name: device, state: state))
                }
            }
        }
    }
}
