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
        try await requireAttached(names, timings: &shared)
        let resetFirst = try await resetBeforeWaiting(names, policy: policy, timings: &shared)
        let mark = qmp.eventMark()
        let unplugStart = ContinuousClock.now
        let (pending, requested) = try await requestUnplugs(names, timings: &shared)
        var methods = requested
        let unplugTimes = try await completeUnplugs(
            pending, resetFirst: resetFirst, policy: policy, after: mark, since: unplugStart, methods: &methods, timings: &shared)
        try await requireGone(names, timings: &shared)
        var results = try await releaseResources(of: devices, methods: methods, unplugTimes: unplugTimes, shared: shared)
        let start = ContinuousClock.now
        try setDeviceStates(names.map { ($0, .detached) })
        results[results.count - 1].timings.record("record", since: start)
        return results
    }

    /// Throws ``DeviceError/notAttached(device:)`` for a device QEMU does not
    /// have. Asked of QEMU only when the record says one is not attached
    /// (the record may be stale; QEMU decides).
    func requireAttached(_ names: [String], timings: inout StepTimings) async throws {
        guard names.contains(where: { !(currentDeviceState($0)?.isAttached ?? false) }) else { return }
        let start = ContinuousClock.now
        let present = try await peripheralIDs()
        timings.record("qom-list", since: start)
        if let missing = names.first(where: { !present.contains($0) }) { throw DeviceError.notAttached(device: missing, lab: lab.name) }
    }

    /// Whether a `system_reset` completes the unplugs at once instead of the
    /// guest: asked by the policy, or the VM is not running (when the policy
    /// allows no reset, that is an error: no guest can release the card).
    func resetBeforeWaiting(_ names: [String], policy: UnplugPolicy, timings: inout StepTimings) async throws -> UnplugMethod? {
        if policy.resetAtOnce { return .resetRequested }
        let start = ContinuousClock.now
        let status = try await qmp.queryStatus()
        timings.record("query-status", since: start)
        guard !status.running else { return nil }
        guard policy.resetFallback else {
            throw DeviceError.guestCannotUnplug(device: names[0], vmStatus: status.status, lab: lab.name)
        }
        return .resetVMNotRunning
    }

    /// `device_del` of each device: those QEMU is now unplugging (or already
    /// was, from an earlier attempt), and those it no longer had (``UnplugMethod/alreadyGone``).
    func requestUnplugs(_ names: [String], timings: inout StepTimings) async throws -> (pending: [String], methods: [String: UnplugMethod]) {
        var methods: [String: UnplugMethod] = [:]
        var pending: [String] = []
        for name in names {
            let start = ContinuousClock.now
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
            timings.record("device_del \(name)", since: start)
        }
        return (pending, methods)
    }

    /// Completes the `pending` unplugs: with one reset when `resetFirst`
    /// says so; else the guest gets until `policy.guestTimeout` after
    /// `unplugStart`, and those it did not release (timed out, refused) are
    /// completed with one reset when the policy allows it. Records how each
    /// went in `methods`; returns each one's unplug time.
    func completeUnplugs(
        _ pending: [String], resetFirst: UnplugMethod?, policy: UnplugPolicy, after mark: QMPEventMark, since unplugStart: ContinuousClock.Instant,
        methods: inout [String: UnplugMethod], timings: inout StepTimings
    ) async throws -> [String: Duration] {
        guard !pending.isEmpty else { return [:] }
        var unplugTimes: [String: Duration] = [:]
        if let resetFirst {
            try await completeUnplugsWithReset(pending, after: mark, timings: &timings)
            for name in pending {
                methods[name] = resetFirst
                unplugTimes[name] = ContinuousClock.now - unplugStart
            }
            return unplugTimes
        }
        var needReset: [String] = []
        let deadline = unplugStart + policy.guestTimeout
        for name in pending {
            let start = ContinuousClock.now
            let outcome = try await waitForUnplug(name, after: mark, timeout: max(.zero, deadline - ContinuousClock.now))
            switch outcome {
            case .deleted:
                timings.record("DEVICE_DELETED \(name) (guest)", since: start)
                methods[name] = .guest
                unplugTimes[name] = ContinuousClock.now - unplugStart
            case .guestError, .timedOut:
                timings.record((outcome == .guestError ? "DEVICE_UNPLUG_GUEST_ERROR " : "guest timeout ") + name, since: start)
                guard policy.resetFallback else {
                    if outcome == .guestError { throw DeviceError.guestRefusedUnplug(device: name) }
                    throw DeviceError.unplugTimedOut(device: name, waited: policy.guestTimeout, lab: lab.name)
                }
                methods[name] = outcome == .guestError ? .resetAfterGuestError : .resetAfterTimeout
                needReset.append(name)
            }
        }
        if !needReset.isEmpty {
            try await completeUnplugsWithReset(needReset, after: mark, timings: &timings)
            for name in needReset { unplugTimes[name] = ContinuousClock.now - unplugStart }
        }
        return unplugTimes
    }

    /// Throws ``DeviceError/stillPresent(device:)`` unless every device is gone
    /// from QOM (authoritative, see peripheralIDs) and from query-pci.
    func requireGone(_ names: [String], timings: inout StepTimings) async throws {
        let start = ContinuousClock.now
        let inQOM = try await peripheralIDs()
        let onPCI = Set(try await qmp.queryPCI().map(\.qdevID))
        timings.record("qom-list, query-pci", since: start)
        if let still = names.first(where: { inQOM.contains($0) || onPCI.contains($0) }) { throw DeviceError.stillPresent(device: still, lab: lab.name) }
    }

    /// `blockdev-del` of each device's disk nodes and deletion of their
    /// overlays; one result per device (the shared steps in the first one's timings).
    func releaseResources(
        of devices: [LabDevice], methods: [String: UnplugMethod], unplugTimes: [String: Duration], shared: StepTimings
    ) async throws -> [DetachResult] {
        var results: [DetachResult] = []
        for device in devices {
            var timings = results.isEmpty ? shared : StepTimings()
            let start = ContinuousClock.now
            try await deleteBlockNodes(of: device)
            if device.emulated.map({ !$0.disks.isEmpty }) ?? false { timings.record("blockdev-del", since: start) }
            let removed = removeHotplugOverlays(of: device)
            results.append(
                DetachResult(
                    device: device.name, method: methods[device.name] ?? .alreadyGone,
                    unplugTime: unplugTimes[device.name] ?? .zero, removedOverlays: removed, timings: timings))
        }
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
                throw DeviceError.unplugTimedOut(device: id, waited: .seconds(10), lab: lab.name)
            }
        }
        timings.record("DEVICE_DELETED (reset)", since: start)
    }
}
