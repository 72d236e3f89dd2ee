import LabSupervision
import Platform
import QMP

extension LabSession {
    /// Makes QEMU's run state and jobs agree with the record after a
    /// snapshot command that was killed half-way, before the next command
    /// relies on them (with ``reconcileDeviceStates()``, under the lab's lock):
    ///
    /// - qlab snapshot jobs a killed command left (running, or concluded and
    ///   never dismissed) are waited for and dismissed;
    /// - a fast save (``PendingSnapshotStep``) left the VM stopped with
    ///   `x-ignore-shared` on: the capability goes off, a RAM image whose
    ///   snapshot was not made goes, and the VM runs again if it ran before;
    /// - a fast load: the supervisor finishes it whatever happened to the
    ///   client (its control loop answers `settle` only once it has); a new
    ///   QEMU that loaded the snapshot and waits for the client's `cont` gets
    ///   it. A QEMU whose load failed stays stopped, as the record says.
    ///
    /// Returns whether anything was done.
    @discardableResult
    public func reconcileSnapshotStep() async throws -> Bool {
        var changed = try await settleEarlierSnapshotJobs(timeout: .seconds(600))
        _ = try? runtime.records.reload()
        guard var pending = currentRecord.revert?.pending else { return changed }
        changed = true
        if pending.operation == .load, pending.phase == .started {
            // A revert the supervisor may be carrying out now; an error means there is no supervisor to wait for.
            _ = try? await ControlServer.request(path: runtime.controlSocketPath, command: "settle", arguments: [:], timeout: .seconds(660))
            try await replaceMonitor()
            guard let now = currentRecord.revert?.pending else { return changed }
            pending = now
        }
        switch (pending.operation, pending.phase) {
        case (.load, .started):
            // The request never reached the supervisor, or it refused: the old QEMU runs on as it was.
            try setPendingStep(nil)
        case (.load, .loaded):
            if pending.resume, try await qmp.queryStatus().status != "running" { try await qmp.cont() }
            try setPendingStep(nil)
        case (.load, .failed):
            break
        case (.save, _):
            _ = try await qmp.execute("migrate-set-capabilities", arguments: Self.ignoreShared(false))
            if let directory = try? ramDirectory() { directory.remove(RAMFiles.temporaryImage(pending.tag)) }
            if try await !listSnapshots().contains(where: { $0.tag == pending.tag }) { removeRAMImage(pending.tag) }
            if pending.resume, try await qmp.queryStatus().status == "paused" { try await qmp.cont() }
            try setPendingStep(nil)
        }
        return changed
    }
}
