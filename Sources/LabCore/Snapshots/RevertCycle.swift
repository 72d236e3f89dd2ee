
/// What one revert cycle did, step by step.
public struct RevertResult: Sendable {
    public var tag: String
    /// Devices unplugged before the load (reset at once: the state is replaced).
    public var detached: [DetachResult]
    /// How the load ran (`snapshot-load job`, `HMP loadvm`, `fresh QEMU on snap-TAG.ram (pid N)`).
    public var via: String
    /// `fast` (a fresh QEMU on the snapshot's RAM image) or `loadvm` (in place).
    public var method: RevertMethod = .loadvm
    /// Why that method.
    public var methodReason: String = ""
    public var attached: [AttachResult]
    /// Every step: `detach DEV: ...`, the load, `attach DEV: ...`.
    public var timings: StepTimings
    /// Wall time of the whole cycle (the steps plus the little between them).
    public var total: Duration
}

extension LabSession {
    /// One revert cycle of the test loop, as fast as qlab can make it:
    /// unplug whatever qlab hotplugged (`device_del` + `system_reset`, since the
    /// guest's state is about to be replaced), load snapshot `tag`, then attach
    /// `devices` (nil: the lab's hotplug devices for this guest) with fresh
    /// disk overlays. The guest then finds the cards itself (ACPI hotplug);
    /// rescanning inside it is the console's job.
    ///
    /// No listing or existence check on the way: a missing tag fails in the
    /// load with QEMU's words. `mapping`: how a fast revert's new QEMU maps
    /// the RAM image (qlab's own reverts map it privately; the others are measured).
    public func revert(
        to tag: String, attaching devices: [String]? = nil, backend: SnapshotBackend = .auto, mapping: RAMImageMapping = .privateMap
    ) async throws -> RevertResult {
        let begin = ContinuousClock.now
        try validate(tag)
        let names = try devices ?? hotplugDeviceNames()
        for name in names { _ = try labDevice(name) }
        var timings = StepTimings()
        let detached: [DetachResult]
        let via: String
        let method: RevertMethod
        if hasRAMImage(tag) {
            // A fresh QEMU: hotplugged devices go with the old one, no unplug needed.
            let fast = try await loadWithRAMImage(tag, mapping: mapping)
            timings.append(fast.timings)
            (detached, via, method) = (fast.dropped, fast.via, .fast)
        } else {
            detached = try await detachHotplugged(policy: .resetAtOnce, timings: &timings)
            let start = ContinuousClock.now
            via = try await runSnapshotCommand(.load, tag: tag, options: SnapshotOptions(backend: backend))
            timings.record(via, since: start)
            method = .loadvm
        }
        let attached = try await attach(devices: names)
        for result in attached { timings.append(result.timings, prefix: "attach \(result.device): ") }
        var result = RevertResult(tag: tag, detached: detached, via: via, attached: attached, timings: timings, total: ContinuousClock.now - begin)
        result.method = method
        result.methodReason = method == .fast ? (currentRecord.revert?.reason ?? "") : loadvmReason(tag)
        return result
    }

    /// The lab's devices attached with hotplug for the guest this lab runs, in lab order.
    public func hotplugDeviceNames() throws -> [String] {
        try lab.hotplugDevices(for: guest).map(\.name)
    }
}
