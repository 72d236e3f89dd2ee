import Platform
import QMP

/// How snapshot commands reach QEMU.
public enum SnapshotBackend: String, Sendable, CaseIterable {
    /// Jobs on QEMU 6.0 and later, HMP before.
    case auto
    /// `snapshot-save`/`snapshot-load`/`snapshot-delete` jobs (QEMU 6.0+).
    case jobs
    /// HMP `savevm`/`loadvm`/`delvm` through `human-monitor-command`.
    case hmp
}

/// Options of ``LabSession/saveSnapshot(_:options:)`` and ``LabSession/loadSnapshot(_:options:)``.
public struct SnapshotOptions: Sendable {
    public var backend: SnapshotBackend
    /// Attach the devices unplugged for the operation back afterwards (fresh overlays).
    public var reattach: Bool
    /// Save: replace a snapshot of the same tag (else it is an error).
    public var replace: Bool
    /// How hotplugged devices are unplugged first; nil: for save, the guest
    /// must release them (10 s, no reset: a reset would be saved); for load,
    /// reset at once (the guest's state is replaced anyway).
    public var unplugPolicy: UnplugPolicy?
    /// How long the job or HMP command may take.
    public var timeout: Duration

    public init(
        backend: SnapshotBackend = .auto, reattach: Bool = true, replace: Bool = false, unplugPolicy: UnplugPolicy? = nil,
        timeout: Duration = .seconds(600)
    ) {
        self.backend = backend
        self.reattach = reattach
        self.replace = replace
        self.unplugPolicy = unplugPolicy
        self.timeout = timeout
    }
}

/// What a snapshot operation did.
public struct SnapshotResult: Sendable {
    /// `save`, `load` or `delete`.
    public var operation: String
    public var tag: String
    /// `snapshot-save job`, `HMP savevm`, `fast: RAM image snap-TAG.ram + device state`, ...
    public var via: String
    /// How RAM was saved or restored: `fast` (a RAM image) or `loadvm` (in qcow2).
    public var method: RevertMethod = .loadvm
    /// Why that method (the plan's reason, or what kept this one from being fast).
    public var methodReason: String = ""
    /// Hotplugged devices unplugged before the operation.
    public var detached: [DetachResult]
    /// Devices attached back after it.
    public var reattached: [AttachResult]
    public var timings: StepTimings
}

extension SnapshotResult {
    /// The snapshot operation itself: the `via` step; for the fast method,
    /// which is several steps (RAM image and job, or the supervisor's
    /// replacement of QEMU), every step but listing, unplugs and re-attaches.
    public var operationTime: Duration {
        guard method == .fast else { return timings.duration(of: via) }
        return timings.steps.filter { step in !["list", "detach ", "attach "].contains { step.name.hasPrefix($0) } }
            .reduce(Duration.zero) { $0 + $1.duration }
    }
}

/// Snapshots of a running lab: internal qcow2 snapshots of the VM (RAM,
/// devices) and of every writable qcow2 node (the guest disk overlay, a UEFI
/// variable store, disks of boot-attached devices).
///
/// Devices hotplugged by qlab are never in a snapshot: a passthrough device
/// cannot be (vfio blocks migration: "VFIO device doesn't support migration"),
/// and an emulated one must not be, because its disk overlay is replaced on
/// every attach and loading a snapshot that holds a device QEMU does not have
/// fails ("Unknown savevm section or instance '0000:00:05.0:01.0/pciespscsi'").
/// So save and load unplug them first and attach them back afterwards, fresh.
///
/// Measured on QEMU 7.2: loading a snapshot taken without a device while that
/// device is attached succeeds, but leaves the device in QEMU with a guest that
/// never saw it (and its id taken); qlab therefore always unplugs first.
extension LabSession {
    // MARK: list

    /// The lab's snapshots, from the VM-state node (`qlab-disk-fmt`), oldest first.
    public func listSnapshots() async throws -> [SnapshotInfo] {
        let nodes = try await snapshotNodes()
        guard let vmstate = nodes.vmstate else { return [] }
        var byNode: [String: [SnapshotInfo]] = [:]
        for node in nodes.all { byNode[node.name] = node.snapshots }
        return (byNode[vmstate] ?? []).map { snapshot in
            var info = snapshot
            info.nodes = nodes.all.filter { node in node.snapshots.contains { $0.tag == snapshot.tag } }.map(\.name)
            info.complete = info.nodes.count == nodes.all.count
            return info
        }
    }

    // MARK: save

    /// Saves the VM as snapshot `tag`. Hotplugged devices are unplugged
    /// first and attached back after (fresh overlays), which the result says.
    /// A device attached at boot that blocks migration (vfio-pci) makes QEMU
    /// refuse: the error carries QEMU's text and the `migration-blocked` diagnosis.
    public func saveSnapshot(_ tag: String, options: SnapshotOptions = SnapshotOptions()) async throws -> SnapshotResult {
        try validate(tag)
        var timings = StepTimings()
        var start = ContinuousClock.now
        let existing = try await listSnapshots()
        timings.record("list", since: start)
        if existing.contains(where: { $0.tag == tag }) {
            guard options.replace else { throw SnapshotError.alreadyExists(tag: tag, lab: lab.name) }
        }
        // A dc390 plugged into this QEMU leaves its EEPROM's state behind: refused before anything is unplugged.
        try refuseSnapshotSaveAfterDC390Plug()
        let detached = try await detachHotplugged(policy: options.unplugPolicy ?? .guestOnly(timeout: .seconds(10)), timings: &timings)
        let via: String
        let obstacle = fastSaveObstacle
        do {
            if existing.contains(where: { $0.tag == tag }) {
                start = ContinuousClock.now
                _ = try await runSnapshotCommand(.delete, tag: tag, options: options)
                removeRAMImage(tag)
                timings.record("delete old", since: start)
            }
            if obstacle == nil {
                via = try await saveWithRAMImage(tag, options: options, timings: &timings)
            } else {
                // A RAM image left from an earlier save of this tag would be loaded instead.
                removeRAMImage(tag)
                start = ContinuousClock.now
                via = try await runSnapshotCommand(.save, tag: tag, options: options)
                timings.record(via, since: start)
            }
        } catch {
            if options.reattach { _ = try? await reattach(detached.map(\.device), operation: "save", tag: tag, timings: &timings) }
            throw error
        }
        let reattached = options.reattach ? try await reattach(detached.map(\.device), operation: "save", tag: tag, timings: &timings) : []
        var result = SnapshotResult(operation: "save", tag: tag, via: via, detached: detached, reattached: reattached, timings: timings)
        result.method = obstacle == nil ? .fast : .loadvm
        result.methodReason = obstacle ?? (currentRecord.revert?.reason ?? "")
        return result
    }

    // MARK: load

    /// Loads snapshot `tag`. Hotplugged devices are unplugged first (reset
    /// at once by default: the guest's state is replaced anyway) and attached
    /// back after, fresh. A failed load leaves the VM stopped (QEMU's
    /// `restore-vm`); the error says so.
    public func loadSnapshot(_ tag: String, options: SnapshotOptions = SnapshotOptions()) async throws -> SnapshotResult {
        try validate(tag)
        var timings = StepTimings()
        // Check first: a load that fails leaves the VM stopped, and the unplug resets it.
        var start = ContinuousClock.now
        let existing = try await listSnapshots()
        timings.record("list", since: start)
        guard let snapshot = existing.first(where: { $0.tag == tag }) else {
            throw SnapshotError.notFound(tag: tag, available: existing.map(\.tag), lab: lab.name)
        }
        guard snapshot.complete else {
            throw SnapshotError.failed(
                operation: "load", tag: tag,
                qemuText: "the snapshot is only on \(snapshot.nodes.joined(separator: ", ")), not on every writable qcow2 disk of the VM",
                vmStatus: nil, diagnoses: [])
        }
        if hasRAMImage(tag) {
            let fast = try await loadWithRAMImage(tag, timeout: options.timeout)
            timings.append(fast.timings)
            let reattached = options.reattach ? try await reattach(fast.dropped.map(\.device), operation: "load", tag: tag, timings: &timings) : []
            var result = SnapshotResult(operation: "load", tag: tag, via: fast.via, detached: fast.dropped, reattached: reattached, timings: timings)
            result.method = .fast
            result.methodReason = currentRecord.revert?.reason ?? ""
            return result
        }
        // Loading in place unplugs and re-plugs the cards in this QEMU (as saving does).
        if options.reattach { try refuseSecondDC390Plug(lab.devices.map(\.name).filter { currentDeviceState($0) == .hotplug }) }
        let detached = try await detachHotplugged(policy: options.unplugPolicy ?? .resetAtOnce, timings: &timings)
        start = ContinuousClock.now
        let via = try await runSnapshotCommand(.load, tag: tag, options: options)
        timings.record(via, since: start)
        let reattached = options.reattach ? try await reattach(detached.map(\.device), operation: "load", tag: tag, timings: &timings) : []
        var result = SnapshotResult(operation: "load", tag: tag, via: via, detached: detached, reattached: reattached, timings: timings)
        result.methodReason = loadvmReason(tag)
        return result
    }

    // MARK: delete

    /// Deletes snapshot `tag` from every node that holds it.
    public func deleteSnapshot(_ tag: String, options: SnapshotOptions = SnapshotOptions()) async throws -> SnapshotResult {
        try validate(tag)
        var timings = StepTimings()
        var start = ContinuousClock.now
        let existing = try await listSnapshots()
        timings.record("list", since: start)
        // QEMU 7.2 deletes a tag nobody has without a word (job and HMP alike).
        guard existing.contains(where: { $0.tag == tag }) else {
            throw SnapshotError.notFound(tag: tag, available: existing.map(\.tag), lab: lab.name)
        }
        start = ContinuousClock.now
        let via = try await runSnapshotCommand(.delete, tag: tag, options: options)
        removeRAMImage(tag)
        timings.record(via, since: start)
        return SnapshotResult(operation: "delete", tag: tag, via: via, detached: [], reattached: [], timings: timings)
    }

    // MARK: Parts

    /// Removes snapshot `tag`'s RAM image, if the lab has one, and its fingerprint from the record.
    func removeRAMImage(_ tag: String) {
        if currentRecord.revert?.images?[tag] != nil { try? updateRecord { _ = $0.revert?.images?.removeValue(forKey: tag) } }
        guard let path = currentRecord.revert?.ramDirectory, let directory = try? runtime.ramDirectory(path: path, create: false) else { return }
        directory.remove(RAMFiles.image(tag))
    }

    /// Why loading `tag` is an in-place loadvm.
    func loadvmReason(_ tag: String) -> String {
        guard let revert = currentRecord.revert, revert.method == .fast else { return currentRecord.revert?.reason ?? "loadvm: the lab record predates fast reverts" }
        return "loadvm: snapshot \(tag) has no RAM image (saved with its RAM in qcow2)"
    }

    func validate(_ tag: String) throws {
        do { try HMPCommand.validateSnapshotTag(tag) } catch { throw SnapshotError.badTag(error) }
    }

    /// Unplugs every device qlab hotplugged (record state `hotplug`), together (one reset when resetting).
    func detachHotplugged(policy: UnplugPolicy, timings: inout StepTimings) async throws -> [DetachResult] {
        let names = lab.devices.map(\.name).filter { currentDeviceState($0) == .hotplug }
        let results = try await detach(devices: names, policy: policy)
        for result in results { timings.append(result.timings, prefix: "detach \(result.device): ") }
        return results
    }

    func reattach(_ devices: [String], operation: String, tag: String, timings: inout StepTimings) async throws -> [AttachResult] {
        do {
            let results = try await attach(devices: devices)
            for result in results { timings.append(result.timings, prefix: "attach \(result.device): ") }
            return results
        } catch {
            let failed = devices.first { currentDeviceState($0) != .hotplug } ?? devices.first ?? ""
            throw SnapshotError.reattachFailed(operation: operation, tag: tag, device: failed, error: "\(error)")
        }
    }

    struct SnapshotNode {
        var name: String
        var snapshots: [SnapshotInfo]
    }

    struct SnapshotNodes {
        var all: [SnapshotNode]
        /// The guest disk's format node when it is one of them, else the first.
        var vmstate: String?
    }

    /// Writable qcow2 format nodes (`query-named-block-nodes`): what holds snapshots.
    func snapshotNodes() async throws -> SnapshotNodes {
        let version = try await qmp.greeting().version
        let arguments: JSONObject? = version >= QEMUVersion(major: 5, minor: 0, micro: 0) ? ["flat": true] : nil
        let reply = try await qmp.execute("query-named-block-nodes", arguments: arguments)
        // Disks of devices qlab hotplugged are not part of the VM's snapshots.
        let hotplugged = Set(
            lab.devices.filter { currentDeviceState($0.name) == .hotplug }.flatMap { $0.emulated?.disks ?? [] }.map(\.formatNodeName))
        var nodes: [SnapshotNode] = []
        for node in reply.arrayValue ?? [] {
            guard node["drv"]?.stringValue == "qcow2", node["ro"]?.boolValue == false,
                let name = node["node-name"]?.stringValue, !hotplugged.contains(name)
            else { continue }
            let snapshots = (node["image"]?["snapshots"]?.arrayValue ?? []).compactMap { SnapshotInfo($0, node: name) }
            nodes.append(SnapshotNode(name: name, snapshots: snapshots))
        }
        let preferred = QEMUCommandLine.IDs.diskFormatNode
        let vmstate = nodes.contains { $0.name == preferred } ? preferred : nodes.first?.name
        return SnapshotNodes(all: nodes, vmstate: vmstate)
    }

    enum SnapshotOperation: String {
        case save, load, delete
        var job: String { "snapshot-" + rawValue }
        var hmpVerb: String {
            switch self {
            case .save: return "savevm"
            case .load: return "loadvm"
            case .delete: return "delvm"
            }
        }
    }

    /// Runs one snapshot operation with the job command or HMP; returns how
    /// (`snapshot-load job`). Failures carry QEMU's words: the job's error, and
    /// what QEMU wrote to its log meanwhile (the job only says "Error -22 while
    /// loading VM state"; the log has "Unknown savevm section ...").
    func runSnapshotCommand(_ operation: SnapshotOperation, tag: String, options: SnapshotOptions) async throws -> String {
        let nodes = try await snapshotNodes()
        guard let vmstate = nodes.vmstate else { throw SnapshotError.noSnapshotDisk(lab: lab.name) }
        let useJobs: Bool
        switch options.backend {
        case .jobs: useJobs = true
        case .hmp: useJobs = false
        case .auto: useJobs = try await qmp.greeting().version >= QEMUVersion(major: 6, minor: 0, micro: 0)
        }
        let logOffset = FileSystem.size(runtime.qemuLogPath) ?? 0
        var failure: String?
        let via: String
        if useJobs {
            via = operation.job + " job"
            var devices = nodes.all.map(\.name)
            if operation == .delete {
                // Only the nodes that hold it: the job fails on a node without it.
                devices = nodes.all.filter { $0.snapshots.contains { $0.tag == tag } }.map(\.name)
                if devices.isEmpty { return via }
            }
            failure = try await runJob(operation, tag: tag, vmstate: vmstate, devices: devices, timeout: options.timeout)
        } else {
            via = "HMP " + operation.hmpVerb
            let command = try HMPCommand(operation.hmpVerb, [tag])
            let output: String
            do {
                output = try await qmp.humanMonitorCommand(command, timeout: options.timeout)
            } catch QMPError.timeout {
                throw SnapshotError.timedOut(operation: operation.hmpVerb, tag: tag, waited: options.timeout, lab: lab.name)
            }
            // HMP answers "" on success and prints "Error: ..." otherwise.
            let text = output.replacingCRLF().trimmingCharacters(in: "\n ")
            if !text.isEmpty { failure = text }
        }
        guard var text = failure else {
            if operation == .load {
                // A failed load leaves QEMU in restore-vm, and a later good load
                // keeps it stopped (QEMU resumes only a VM that was running).
                let status = try await qmp.queryStatus().status
                if status == "restore-vm" {
                    try await qmp.cont()
                    return via + ", resumed from restore-vm"
                }
                // A QEMU that a failed fast revert left stopped: it ran before that revert.
                if let pending = currentRecord.revert?.pending, pending.operation == .load, pending.resume, status == "prelaunch" {
                    try await qmp.cont()
                    try setPendingStep(nil)
                    return via + ", resumed (a failed fast revert had left it stopped)"
                }
            }
            return via
        }
        let logged = Supervisor.readLog(runtime.qemuLogPath, from: logOffset)
        if !logged.isEmpty, !text.contains(logged) { text += "\n" + logged }
        if operation == .load, text.contains("x-ignore-shared is off, but received capability is on") {
            text += "\nqlab: snapshot \(tag) was saved with the fast revert method and its RAM image (snap-\(tag).ram) is gone"
                + " (`down` and `rm` remove RAM images), so it cannot be loaded: save it again (or use `revert: loadvm` for snapshots kept across `down`)"
        }
        let status = try? await qmp.queryStatus().status
        throw SnapshotError.failed(operation: via, tag: tag, qemuText: text, vmStatus: status, diagnoses: Diagnoser.diagnose(text))
    }

    /// `snapshot-save|load|delete` with a fresh job id; waits for the job to
    /// conclude, reads its error from `query-jobs`, dismisses it. Returns the error, nil on success.
    func runJob(_ operation: SnapshotOperation, tag: String, vmstate: String, devices: [String], timeout: Duration) async throws -> String? {
        if claimFirstSnapshotJob() { try await settleEarlierSnapshotJobs(timeout: timeout) }
        let jobID = "qlab-\(operation.rawValue)-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        var arguments: JSONObject = ["job-id": .string(jobID), "tag": .string(tag), "devices": .array(devices.map(JSONValue.string))]
        if operation != .delete { arguments["vmstate"] = .string(vmstate) }
        let mark = qmp.eventMark()
        do {
            _ = try await qmp.execute(operation.job, arguments: arguments)
        } catch QMPError.command(_, _, let message) {
            return message
        }
        do {
            _ = try await qmp.waitForEvent(
                "JOB_STATUS_CHANGE", matching: ["id": .string(jobID), "status": "concluded"], after: mark, timeout: timeout)
        } catch QMPError.timeout {
            throw SnapshotError.timedOut(operation: operation.job, tag: tag, waited: timeout, lab: lab.name)
        }
        let jobs = try await qmp.execute("query-jobs")
        let error = (jobs.arrayValue ?? []).first { $0["id"]?.stringValue == jobID }?["error"]?.stringValue
        _ = try? await qmp.execute("job-dismiss", arguments: ["id": .string(jobID)])
        return error
    }
}

extension LabSession {
    /// A snapshot command killed mid-job leaves its job running in QEMU (and,
    /// once it ends, concluded but never dismissed). Before starting another,
    /// wait for such qlab jobs to conclude and dismiss them, so the next
    /// command sees the snapshots as that job left them ("already exists" races otherwise).
    /// Returns whether there were any.
    @discardableResult
    func settleEarlierSnapshotJobs(timeout: Duration) async throws -> Bool {
        let mark = qmp.eventMark()
        let jobs = try await qmp.execute("query-jobs").arrayValue ?? []
        var settled = false
        for job in jobs {
            guard let id = job["id"]?.stringValue, id.hasPrefix("qlab-"), job["type"]?.stringValue?.hasPrefix("snapshot-") == true else { continue }
            settled = true
            if job["status"]?.stringValue != "concluded" && job["status"]?.stringValue != "null" {
                do {
                    _ = try await qmp.waitForEvent("JOB_STATUS_CHANGE", matching: ["id": .string(id), "status": "concluded"], after: mark, timeout: timeout)
                } catch QMPError.timeout {
                    throw SnapshotError.timedOut(operation: job["type"]?.stringValue ?? "snapshot job", tag: id, waited: timeout, lab: lab.name)
                }
            }
            _ = try? await qmp.execute("job-dismiss", arguments: ["id": .string(id)])
        }
        return settled
    }
}

extension String {
    func replacingCRLF() -> String {
        String(decoding: utf8.filter { $0 != 0x0D }, as: UTF8.self)
    }
}
