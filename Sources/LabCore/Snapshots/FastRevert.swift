import Platform
import QMP

/// The fast revert method (docs/devices-snapshots.md, "Revert methods"):
/// guest RAM lives in `RAMDIR/live.ram` (shared file backend); a snapshot
/// keeps a copy of it, `RAMDIR/snap-TAG.ram`, and only device state and disks
/// in qcow2 (`x-ignore-shared`); a revert is a fresh QEMU, started by the
/// lab's supervisor, on a private copy-on-write map of that image.
extension LabSession {
    /// The lab's revert method as its record says (older records: loadvm).
    public var revertMethod: RevertMethod { currentRecord.revert?.method ?? .loadvm }

    /// Why a snapshot saved now keeps RAM in qcow2 (the loadvm way); nil when
    /// it can be a fast one (a fast lab whose QEMU runs on the live RAM file).
    public var fastSaveObstacle: String? {
        guard let revert = currentRecord.revert else { return "loadvm: the lab record predates fast reverts" }
        guard revert.method == .fast else { return revert.reason }
        if let mapped = revert.mappedSnapshot {
            return "loadvm: this QEMU maps snapshot \(mapped)'s RAM image copy-on-write (after a fast revert); its RAM goes into the snapshot"
        }
        return nil
    }

    /// True when snapshot `tag` has a RAM image, so loading it is a fast revert.
    public func hasRAMImage(_ tag: String) -> Bool {
        guard let revert = currentRecord.revert, revert.method == .fast, let path = revert.imagePath(tag) else { return false }
        return FileSystem.entryExists(path)
    }

    /// The lab's RAM directory, checked (``PrivateDirectory``).
    func ramDirectory() throws -> PrivateDirectory {
        guard let path = currentRecord.revert?.ramDirectory, let directory = try runtime.ramDirectory(path: path, create: false) else {
            throw SnapshotError.failed(operation: "save", tag: "", qemuText: "the lab's RAM directory is missing", vmStatus: nil, diagnoses: [])
        }
        return directory
    }

    /// A fast save: stop; `x-ignore-shared` on; copy the live RAM file to the
    /// snapshot's RAM image (temporary name, then rename) and record its
    /// fingerprint; the snapshot job (device state and disks only);
    /// capability off; `cont` when it ran. A failure removes the image and
    /// leaves the VM as it was. The record says a save is under way while the
    /// VM is stopped for it, so a command killed meanwhile is finished by the
    /// next one (``reconcileSnapshotStep()``).
    func saveWithRAMImage(_ tag: String, options: SnapshotOptions, timings: inout StepTimings) async throws -> String {
        var start = ContinuousClock.now
        let wasRunning = try await qmp.queryStatus().status == "running"
        try setPendingStep(PendingSnapshotStep(operation: .save, tag: tag, resume: wasRunning, phase: .started))
        if wasRunning { try await qmp.stop() }
        timings.record("stop", since: start)
        let directory = try ramDirectory()
        var saved = false
        defer {
            if !saved { removeRAMImage(tag) }
        }
        do {
            start = ContinuousClock.now
            _ = try await qmp.execute("migrate-set-capabilities", arguments: Self.ignoreShared(true))
            timings.record("x-ignore-shared on", since: start)
            start = ContinuousClock.now
            let image = try RAMImage.saveImage(in: directory, tag: tag)
            try updateRecord { record in
                if record.revert?.images == nil { record.revert?.images = [:] }
                record.revert?.images?[tag] = image.fingerprint
            }
            timings.record("RAM image (\(image.bytes >> 20) MiB)", since: start)
            start = ContinuousClock.now
            let via = try await runSnapshotCommand(.save, tag: tag, options: options)
            timings.record(via, since: start)
            saved = true
        } catch {
            _ = try? await qmp.execute("migrate-set-capabilities", arguments: Self.ignoreShared(false))
            if wasRunning { try? await qmp.cont() }
            try? setPendingStep(nil)
            if let error = error as? LabError { throw SnapshotError.failed(operation: "save", tag: tag, qemuText: "\(error)", vmStatus: nil, diagnoses: []) }
            throw error
        }
        start = ContinuousClock.now
        _ = try await qmp.execute("migrate-set-capabilities", arguments: Self.ignoreShared(false))
        if wasRunning { try await qmp.cont() }
        try setPendingStep(nil)
        timings.record(wasRunning ? "x-ignore-shared off, cont" : "x-ignore-shared off", since: start)
        return "fast: RAM image \(RAMFiles.image(tag)) + device state"
    }

    /// Records (or clears) the fast save or load under way.
    func setPendingStep(_ step: PendingSnapshotStep?) throws {
        guard currentRecord.revert != nil else { return }
        try updateRecord { $0.revert?.pending = step }
    }

    /// Why snapshot `tag`'s RAM image must not be loaded (it is not the one
    /// the save recorded, ``RAMImage/loadObstacle(tag:revert:directory:)``); nil when it may.
    func ramImageObstacle(_ tag: String) -> String? {
        guard let revert = currentRecord.revert else { return "the lab record has no revert method" }
        guard let directory = try? ramDirectory() else { return "the lab's RAM directory \(revert.ramDirectory ?? "") is missing" }
        return RAMImage.loadObstacle(tag: tag, revert: revert, directory: directory)
    }

    /// A fast load: the devices qlab hotplugged go with the old QEMU (their
    /// overlays are deleted, the record says detached); the supervisor
    /// replaces QEMU (``Supervisor``'s control socket); this session then
    /// talks to the new QEMU. Returns how, the supervisor's steps, and what was dropped.
    func loadWithRAMImage(
        _ tag: String, timeout: Duration = .seconds(600), mapping: RAMImageMapping = .privateMap
    ) async throws -> (via: String, timings: StepTimings, dropped: [DetachResult]) {
        var timings = StepTimings()
        var start = ContinuousClock.now
        // Before anything is touched: a RAM image that is not the saved one is refused
        // (the supervisor checks again, with what else the new QEMU needs, before the old one quits).
        if let obstacle = ramImageObstacle(tag) {
            throw SnapshotError.failed(operation: "fast revert", tag: tag, qemuText: obstacle, vmStatus: nil, diagnoses: [])
        }
        timings.record("check RAM image", since: start)
        start = ContinuousClock.now
        var dropped: [DetachResult] = []
        let attached = lab.devices.filter { currentDeviceState($0.name) == .hotplug }
        for device in attached {
            let removed = removeHotplugOverlays(of: device)
            dropped.append(DetachResult(device: device.name, method: .droppedWithQEMU, unplugTime: .zero, removedOverlays: removed, timings: StepTimings()))
        }
        try setDeviceStates(attached.map { ($0.name, .detached) })
        if !attached.isEmpty { timings.record("drop hotplugged devices with the old QEMU", since: start) }
        start = ContinuousClock.now
        // Until the supervisor takes over: a command killed before it does leaves this for the next one to clear.
        // A QEMU an earlier load left stopped keeps what was meant for it: run if the VM ran before that load.
        let earlier = currentRecord.revert?.pending
        try setPendingStep(PendingSnapshotStep(operation: .load, tag: tag, resume: earlier?.operation == .load && earlier?.resume == true, phase: .started))
        let reply: JSONObject
        do {
            // resume false: this session reconnects while the new VM is still stopped (QEMU's main
            // loop answers at once then), and resumes it itself.
            reply = try await ControlServer.request(
                path: runtime.controlSocketPath, command: "revert",
                arguments: ["tag": .string(tag), "resume": false, "mapping": .string(mapping.rawValue)], timeout: timeout)
        } catch {
            // QEMU may have been replaced (a failed load) or be gone: follow it. A refusal
            // left the old QEMU and this session's monitor on it (QEMU serves one client
            // per socket, so a second connect would only wait out its timeout).
            let before = currentRecord.qemuPID
            if (try? runtime.records.reload())?.qemuPID != before { try? await replaceMonitor() }
            // Refused before QEMU was touched: nothing is pending. A failed load stays recorded as failed.
            if currentRecord.revert?.pending?.phase == .started { try? setPendingStep(nil) }
            let status = try? await qmp.queryStatus().status
            let text = "\(error)"
            throw SnapshotError.failed(operation: "fast revert", tag: tag, qemuText: text, vmStatus: status, diagnoses: Diagnoser.diagnose(text))
        }
        // The supervisor's own steps, then the rest of the round trip.
        let elapsed = ContinuousClock.now - start
        var reported = Duration.zero
        for step in reply["steps"]?.arrayValue ?? [] {
            guard let name = step["step"]?.stringValue, let ms = step["ms"]?.doubleValue else { continue }
            let duration = Duration.microseconds(Int64(ms * 1000))
            timings.record("supervisor: " + name, duration: duration)
            reported += duration
        }
        timings.record("control request", duration: max(.zero, elapsed - reported))
        start = ContinuousClock.now
        try await replaceMonitor()
        timings.record("reconnect QMP", since: start)
        if reply["resume"]?.boolValue == true {
            start = ContinuousClock.now
            try await qmp.cont()
            timings.record("cont", since: start)
        }
        try setPendingStep(nil)
        let pid = reply["qemu_pid"]?.intValue.map { " (pid \($0))" } ?? ""
        return ((reply["via"]?.stringValue ?? "fresh QEMU on \(RAMFiles.image(tag))") + pid, timings, dropped)
    }

    /// Copies snapshot `tag`'s RAM image to `RAMDIR/premade-TAG.ram` ahead of
    /// a revert that maps it shared (``RAMImageMapping/premade``; a
    /// measurement, `qlab-bench revert --passthrough`). Returns the bytes copied.
    public func premakeRAMCopy(_ tag: String) throws -> Int {
        if let obstacle = ramImageObstacle(tag) {
            throw SnapshotError.failed(operation: "copy RAM image", tag: tag, qemuText: obstacle, vmStatus: nil, diagnoses: [])
        }
        return try RAMImage.copyImage(in: try ramDirectory(), tag: tag, to: RAMFiles.premadeCopy(tag))
    }

    static func ignoreShared(_ on: Bool) -> JSONObject {
        ["capabilities": [["capability": "x-ignore-shared", "state": .bool(on)]]]
    }
}
