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
    public func remove(_ name: String, lockTimeout: Duration = .seconds(30)) async throws -> Removal {
        let runtime = self.runtime(name)
        try runtime.checkDirectories()
        let lock = try await runtime.takeLock(timeout: lockTimeout)
        defer { lock.removeFile() }
        if let record = try runtime.record, runtime.liveQEMU(record) != nil || runtime.liveSupervisor(record) != nil {
            throw LabError.stillRunning(lab: name, pid: runtime.liveQEMU(record), supervisorPID: runtime.liveSupervisor(record))
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

    /// What `removeAll` did with one lab.
    public enum RemovalOutcome: Sendable {
        case removed(Removal)
        /// Running (or owned by a running command): kept.
        case kept(LabError)
        /// Its removal failed.
        case failed(any Error)
    }

    /// `qlab rm --all`: every stopped lab known here removed (as ``remove(_:)``),
    /// every running one (or one a running command owns or holds) kept, each
    /// lab's outcome in name order. A lab that is busy is not waited for.
    public func removeAll() async throws -> [(name: String, outcome: RemovalOutcome)] {
        var outcomes: [(name: String, outcome: RemovalOutcome)] = []
        for name in try LabRuntime.knownNames(environment: environment) {
            do {
                outcomes.append((name, .removed(try await remove(name, lockTimeout: .zero))))
            } catch let error as LabError {
                switch error {
                case .stillRunning, .owned, .busy: outcomes.append((name, .kept(error)))
                default: outcomes.append((name, .failed(error)))
                }
            } catch {
                outcomes.append((name, .failed(error)))
            }
        }
        return outcomes
    }
}
