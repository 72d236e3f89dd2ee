import Platform
import QMP

/// What ``LabSession/detach(_:policy:)`` did for one device.
public struct DetachResult: Sendable {
    public var device: String
    public var method: UnplugMethod
    /// From `device_del` to DEVICE_DELETED (or to the decision that it was gone).
    public var unplugTime: Duration
    /// Overlays deleted (the hotplugged disks' writes, thrown away).
    public var removedOverlays: [String]
    /// The steps of this detach; when several devices went together, the
    /// shared steps (the reset, query-pci) are in the first device's timings.
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
        try await detach(devices: [deviceName], policy: policy)[0]
    }

    /// Unplugs several devices at once: every `device_del` first, so the
    /// guest handles them together, and with a reset one `system_reset`
    /// completes them all. Results in the order given.
    public func detach(devices names: [String], policy: UnplugPolicy = .standard) async throws -> [DetachResult] {
        guard !names.isEmpty else { return [] }
        var shared = StepTimings()
        let devices = try names.map { try labDevice($0) }
        var start = ContinuousClock.now
        if names.contains(where: { !(currentDeviceState($0)?.isAttached ?? false) }) {
            // The record may be stale; QEMU decides.
            let present = try await peripheralIDs()
            shared.record("qom-list", since: start)
            if let missing = names.first(where: { !present.contains($0) }) { throw DeviceError.notAttached(device: missing) }
        }

        var resetFirst: UnplugMethod? = policy.resetAtOnce ? .resetRequested : nil
        if resetFirst == nil {
            start = ContinuousClock.now
            let status = try await qmp.queryStatus()
            shared.record("query-status", since: start)
            if !status.running {
                guard policy.resetFallback else {
                    throw DeviceError.guestCannotUnplug(device: names[0], vmStatus: status.status)
                }
                resetFirst = .resetVMNotRunning
            }
        }

        let mark = qmp.eventMark()
        let unplugStart = ContinuousClock.now
        var methods: [String: UnplugMethod] = [:]
        var pending: [String] = []
        for name in names {
            start = ContinuousClock.now
            do {
                _ = try await qmp.execute("device_del", arguments: ["id": .string(name)])
                pending.append(name)
            } catch QMPError.command(_, let errorClass, let message) {
                if errorClass == "DeviceNotFound" || message.contains("not found") {
                    methods[name] = .alreadyGone
                } else if message.contains("already in the process of unplug") {
                    // Pending from an earlier attempt: keep waiting for it.
                    pending.append(name)
                } else {
                    throw DeviceError.qemuRefused(device: name, command: "device_del", message: message, diagnoses: Diagnoser.diagnose(message))
                }
            }
            shared.record("device_del \(name)", since: start)
        }

        var unplugTimes: [String: Duration] = [:]
        if let resetFirst, !pending.isEmpty {
            try await completeUnplugsWithReset(pending, after: mark, timings: &shared)
            for name in pending {
                methods[name] = resetFirst
                unplugTimes[name] = ContinuousClock.now - unplugStart
            }
        } else if !pending.isEmpty {
            var needReset: [String] = []
            let deadline = unplugStart + policy.guestTimeout
            for name in pending {
                start = ContinuousClock.now
                let outcome = try await waitForUnplug(name, after: mark, timeout: max(.zero, deadline - ContinuousClock.now))
                switch outcome {
                case .deleted:
                    shared.record("DEVICE_DELETED \(name) (guest)", since: start)
                    methods[name] = .guest
                    unplugTimes[name] = ContinuousClock.now - unplugStart
                case .guestError, .timedOut:
                    shared.record((outcome == .guestError ? "DEVICE_UNPLUG_GUEST_ERROR " : "guest timeout ") + name, since: start)
                    guard policy.resetFallback else {
                        if outcome == .guestError { throw DeviceError.guestRefusedUnplug(device: name) }
                        throw DeviceError.unplugTimedOut(device: name, waited: policy.guestTimeout)
                    }
                    methods[name] = outcome == .guestError ? .resetAfterGuestError : .resetAfterTimeout
                    needReset.append(name)
                }
            }
            if !needReset.isEmpty {
                try await completeUnplugsWithReset(needReset, after: mark, timings: &shared)
                for name in needReset { unplugTimes[name] = ContinuousClock.now - unplugStart }
            }
        }

        // Gone from QOM (authoritative, see peripheralIDs) and from query-pci.
        start = ContinuousClock.now
        let inQOM = try await peripheralIDs()
        let onPCI = Set(try await qmp.queryPCI().map(\.qdevID))
        shared.record("qom-list, query-pci", since: start)
        if let still = names.first(where: { inQOM.contains($0) || onPCI.contains($0) }) { throw DeviceError.stillPresent(device: still) }

        var results: [DetachResult] = []
        for device in devices {
            var timings = results.isEmpty ? shared : StepTimings()
            start = ContinuousClock.now
            try await deleteBlockNodes(of: device)
            if device.emulated.map({ !$0.disks.isEmpty }) ?? false { timings.record("blockdev-del", since: start) }
            let removed = removeHotplugOverlays(of: device)
            results.append(
                DetachResult(
                    device: device.name, method: methods[device.name] ?? .alreadyGone,
                    unplugTime: unplugTimes[device.name] ?? .zero, removedOverlays: removed, timings: timings))
        }
        start = ContinuousClock.now
        try setDeviceStates(names.map { ($0, .detached) })
        results[results.count - 1].timings.record("record", since: start)
        return results
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

    /// One `system_reset`, then DEVICE_DELETED for each of `ids` (after `mark`).
    func completeUnplugsWithReset(_ ids: [String], after mark: QMPEventMark, timings: inout StepTimings) async throws {
        var start = ContinuousClock.now
        _ = try await qmp.execute("system_reset")
        timings.record("system_reset", since: start)
        start = ContinuousClock.now
        for id in ids {
            do {
                _ = try await qmp.waitForEvent("DEVICE_DELETED", matching: ["device": .string(id)], after: mark, timeout: .seconds(10))
            } catch QMPError.timeout {
                throw DeviceError.unplugTimedOut(device: id, waited: .seconds(10))
            }
        }
        timings.record("DEVICE_DELETED (reset)", since: start)
    }
}
