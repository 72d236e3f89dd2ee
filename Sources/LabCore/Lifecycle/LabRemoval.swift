import Platform

/// `qlab rm`: a stopped lab's state (overlays, logs, records) and runtime leftovers.
extension LabController {
    /// What `remove` took away.
    public struct Removal: Sendable {
        public var name: String
        /// Bytes the removed files held (overlays, logs, records).
        public var bytes: Int
        /// False when the lab had nothing left to remove.
        public var removedAnything: Bool
    }

    /// Removes everything a stopped lab keeps: its state dir (guest and device
    /// overlays, console and QEMU logs, event log, records) and any runtime
    /// leftovers, under the lab's lock. A running lab is refused (`down` first);
    /// directories that fail the privacy checks are reported, not touched.
    public func remove(_ name: String) async throws -> Removal {
        let runtime = self.runtime(name)
        try runtime.checkDirectories()
        let lock = try await runtime.takeLock()
        defer { lock.removeFile() }
        if let record = try runtime.record, runtime.liveQEMU(record) != nil || runtime.liveSupervisor(record) != nil {
            throw LabError.alreadyRunning(lab: name, pid: runtime.liveQEMU(record), supervisorPID: runtime.liveSupervisor(record))
        }
        var bytes = 0
        var removedAnything = false
        // RAM files a crashed lab's supervisor could not remove (docs/devices-snapshots.md).
        if FileSystem.entryExists(runtime.ramDirectoryPath) {
            bytes += runtime.removeRAMFiles()
            removedAnything = true
        }
        if let root = try runtime.runtimeRootDirectory(create: false), root.contains(name) {
            bytes += root.removeTree(name)
            removedAnything = true
        }
        if let root = try runtime.stateRootDirectory(create: false), root.contains(name) {
            bytes += root.removeTree(name)
            removedAnything = true
        }
        return Removal(name: name, bytes: bytes, removedAnything: removedAnything)
    }
}
