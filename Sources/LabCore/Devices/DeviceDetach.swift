import QMP

/// What ``LabSession/detach(_:policy:)`` did.
public struct DetachResult: Sendable {
    public var device: String
    public var method: UnplugMethod
    /// From `device_del` to DEVICE_DELETED (or to the decision that it was gone).
    public var unplugTime: Duration
    /// Overlays deleted (the hotplugged disks' writes, thrown away).
    public var removedOverlays: [String]
    public var timings: StepTimings
}

extension LabSession {
    /// Unplugs a lab device and cleans up after it, so the same id can be
    /// attached again.
    ///
    /// `device_del`; then DEVICE_DELETED for the device (`data.device` is its
    /// id) within `policy.guestTimeout`, with DEVICE_UNPLUG_GUEST_ERROR
    /// watched too; a `system_reset` completes the unplug when the policy
    /// allows and the guest did not, refused, or could not (VM not running,
    /// see ``UnplugPolicy``). Then `query-pci` must not list the id any more;
    /// then `blockdev-del` of its disks' nodes and their overlays are deleted;
    /// only then does the record say `detached`. The result says which way
    /// the unplug completed.
    public func detach(_ deviceName: String, policy: UnplugPolicy = .standard) async throws -> DetachResult {
        var timings = StepTimings()
        let device = try labDevice(deviceName)
        var start = ContinuousClock.now
        let state = currentDeviceState(deviceName)
        if state != "boot" && state != "hotplug" {
            // The record may be stale; QEMU decides.
            let present = try await qmp.queryPCI().contains { $0.qdevID == deviceName }
            timings.record("query-pci", since: start)
            if !present { throw DeviceError.notAttached(device: deviceName) }
        }

        var resetFirst: UnplugMethod? = policy.resetAtOnce ? .resetRequested : nil
        if resetFirst == nil {
            start = ContinuousClock.now
            let status = try await qmp.queryStatus()
            timings.record("query-status", since: start)
            if !status.running {
                guard policy.resetFallback else {
                    throw DeviceError.guestCannotUnplug(device: deviceName, vmStatus: status.status)
                }
                resetFirst = .resetVMNotRunning
            }
        }

        let mark = qmp.eventMark()
        let unplugStart = ContinuousClock.now
        var method = UnplugMethod.guest
        var gone = false
        do {
            _ = try await qmp.execute("device_del", arguments: ["id": .string(deviceName)])
        } catch QMPError.command(_, let errorClass, let message) {
            if errorClass == "DeviceNotFound" || message.contains("not found") {
                gone = true
                method = .alreadyGone
            } else if !message.contains("already in the process of unplug") {
                // An unplug pending from an earlier attempt is fine: keep waiting for it.
                throw DeviceError.qemuRefused(device: deviceName, command: "device_del", message: message, diagnoses: Diagnoser.diagnose(message))
            }
        }
        timings.record("device_del", since: unplugStart)

        if !gone {
            if let resetFirst {
                method = resetFirst
                try await completeUnplugWithReset(deviceName, after: mark, timings: &timings)
            } else {
                start = ContinuousClock.now
                let outcome = try await waitForUnplug(deviceName, after: mark, timeout: policy.guestTimeout)
                switch outcome {
                case .deleted:
                    timings.record("DEVICE_DELETED (guest)", since: start)
                case .guestError, .timedOut:
                    timings.record(outcome == .guestError ? "DEVICE_UNPLUG_GUEST_ERROR" : "guest timeout", since: start)
                    guard policy.resetFallback else {
                        if outcome == .guestError { throw DeviceError.guestRefusedUnplug(device: deviceName) }
                        throw DeviceError.unplugTimedOut(device: deviceName, waited: policy.guestTimeout)
                    }
                    method = outcome == .guestError ? .resetAfterGuestError : .resetAfterTimeout
                    try await completeUnplugWithReset(deviceName, after: mark, timings: &timings)
                }
            }
        }
        let unplugTime = ContinuousClock.now - unplugStart

        start = ContinuousClock.now
        if try await qmp.queryPCI().contains(where: { $0.qdevID == deviceName }) {
            throw DeviceError.stillPresent(device: deviceName)
        }
        timings.record("query-pci", since: start)

        start = ContinuousClock.now
        for disk in device.emulated?.disks ?? [] {
            for node in [disk.formatNodeName, disk.fileNodeName] {
                do {
                    _ = try await qmp.execute("blockdev-del", arguments: ["node-name": .string(node)])
                } catch QMPError.command(_, _, let message) where message.contains("Failed to find node") || message.contains("not found") {
                    continue
                } catch QMPError.command(_, _, let message) {
                    throw DeviceError.qemuRefused(device: deviceName, command: "blockdev-del \(node)", message: message, diagnoses: [])
                }
            }
        }
        if device.emulated.map({ !$0.disks.isEmpty }) ?? false { timings.record("blockdev-del", since: start) }

        var removed: [String] = []
        for disk in device.emulated?.disks ?? [] {
            let path = hotplugOverlayPath(disk)
            if FileSystem.exists(path) {
                FileSystem.remove(path)
                removed.append(path)
            }
        }
        start = ContinuousClock.now
        try setDeviceState(deviceName, "detached")
        timings.record("record", since: start)
        return DetachResult(device: deviceName, method: method, unplugTime: unplugTime, removedOverlays: removed, timings: timings)
    }

    enum UnplugOutcome { case deleted, guestError, timedOut }

    /// Waits for DEVICE_DELETED or DEVICE_UNPLUG_GUEST_ERROR for `id` after `mark`, whichever comes first.
    func waitForUnplug(_ id: String, after mark: QMPEventMark, timeout: Duration) async throws -> UnplugOutcome {
        let pattern: JSONValue = ["device": .string(id)]
        return try await withThrowingTaskGroup(of: UnplugOutcome.self) { group in
            group.addTask {
                do {
                    _ = try await self.qmp.waitForEvent("DEVICE_DELETED", matching: pattern, after: mark, timeout: timeout)
                    return .deleted
                } catch QMPError.timeout { return .timedOut }
            }
            group.addTask {
                do {
                    _ = try await self.qmp.waitForEvent("DEVICE_UNPLUG_GUEST_ERROR", matching: pattern, after: mark, timeout: timeout)
                    return .guestError
                } catch QMPError.timeout { return .timedOut }
            }
            var result = UnplugOutcome.timedOut
            while let outcome = try await group.next() {
                if outcome != .timedOut {
                    result = outcome
                    break
                }
            }
            group.cancelAll()
            // The loser ends with .cancelled; drain it without failing.
            while (try? await group.next()) != nil {}
            return result
        }
    }

    /// `system_reset`, then DEVICE_DELETED for `id` (after `mark`).
    func completeUnplugWithReset(_ id: String, after mark: QMPEventMark, timings: inout StepTimings) async throws {
        var start = ContinuousClock.now
        _ = try await qmp.execute("system_reset")
        timings.record("system_reset", since: start)
        start = ContinuousClock.now
        do {
            _ = try await qmp.waitForEvent("DEVICE_DELETED", matching: ["device": .string(id)], after: mark, timeout: .seconds(10))
        } catch QMPError.timeout {
            throw DeviceError.unplugTimedOut(device: id, waited: .seconds(10))
        }
        timings.record("DEVICE_DELETED (reset)", since: start)
    }
}
