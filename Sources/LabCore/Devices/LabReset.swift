import Platform

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
    /// guest never answered): lab devices the record has attached that QEMU
    /// no longer has are cleaned up (block nodes, overlays) and recorded as detached.
    public func reset(timeout: Duration = .seconds(10)) async throws -> ResetResult {
        var timings = StepTimings()
        let mark = qmp.eventMark()
        var start = ContinuousClock.now
        _ = try await qmp.execute("system_reset")
        timings.record("system_reset", since: start)
        start = ContinuousClock.now
        _ = try await qmp.waitForEvent("RESET", after: mark, timeout: timeout)
        timings.record("RESET", since: start)

        // A reset completes pending unplugs in the same main-loop turn, before
        // QEMU reads the next command: after this reply, QOM shows the outcome.
        start = ContinuousClock.now
        let present = try await peripheralIDs()
        timings.record("qom-list", since: start)
        var completed: [String] = []
        let attached = Set(attachedDevices())
        for device in lab.devices where attached.contains(device.name) && !present.contains(device.name) {
            try await deleteBlockNodes(of: device)
            for disk in device.emulated?.disks ?? [] { FileSystem.remove(hotplugOverlayPath(disk)) }
            completed.append(device.name)
        }
        try setDeviceStates(completed.map { ($0, .detached) })
        return ResetResult(completedUnplugs: completed, timings: timings)
    }
}
