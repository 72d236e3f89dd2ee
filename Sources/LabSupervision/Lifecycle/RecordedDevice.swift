/// One device of ``LabRecord/devices``: `{"name": ..., "state": "boot"|"hotplug"|"detached"}`.
public struct RecordedDevice: Sendable, Hashable, Codable {
    public var name: String
    public var state: DeviceState

    public init(name: String, state: DeviceState) {
        self.name = name
        self.state = state
    }
}
