import QMP

/// What ``LabSession/reset(timeout:)`` did.
public struct ResetResult: Sendable {
    /// Lab devices whose pending unplug the reset completed (now detached).
    public var completedUnplugs: [String]
    public var timings: StepTimings
}

extension LabSession {
    /// `system_reset`, then waits for the RESET event (1-2 ms on QEMU 7.2).
    ///
    /// A reset also completes any pending PCI unplug (a `device_del` the
    /// guest never answered): those devices are cleaned up (block nodes,
    /// overlays) and recorded as detached.
    public func reset(timeout: Duration = .seconds(10)) async throws -> ResetResult {
        var timings = StepTimings()
        let mark = qmp.eventMark()
        var start = ContinuousClock.now
        _ = try await qmp.execute("system_reset")
        timings.record("system_reset", since: start)
        start = ContinuousClock.now
        _ = try await qmp.waitForEvent("RESET", after: mark, timeout: timeout)
        timings.record("RESET", since: start)

        // DEVICE_DELETED is emitted in the same main-loop turn as RESET.
        let deleted = Set(qmp.eventHistory.filter { $0.sequence > mark.sequence && $0.name == "DEVICE_DELETED" }
            .compactMap { $0.data["device"]?.stringValue })
        var completed: [String] = []
        for device in lab.devices where deleted.contains(device.name) {
            await removeBlockNodes(of: device)
            for disk in device.emulated?.disks ?? [] { FileSystem.remove(hotplugOverlayPath(disk)) }
            try setDeviceState(device.name, "detached")
            completed.append(device.name)
        }
        return ResetResult(completedUnplugs: completed, timings: timings)
    }
}
