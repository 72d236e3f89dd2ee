import Platform
import QMP
import Synchronization

/// The one way to `lab.json`: a lab's record, read from the checked runtime
/// dir once by this store and kept, written with atomic replace
/// (``PrivateDirectory/writeAtomically(_:_:mode:)``) and kept as written.
///
/// One store serves one command or one session (every copy of a
/// ``LabRuntime`` shares its store). Writers of device states hold the lab's
/// lock, so within a command what the store holds is what is on disk; the
/// one other writer is the lab's supervisor, which writes the record when it
/// starts QEMU (pids, start times). Callers that must see such a write from
/// another process call ``reload()`` and say why where they do.
public final class LabRecordStore: Sendable {
    public let name: String
    /// The runtime root (``LabRuntime/runtimeRoot``): the record is `ROOT/NAME/lab.json`.
    public let runtimeRoot: String
    /// The record once read or written; nil before, and while there is none
    /// (absence is asked again: one failing `openat(2)`, and `up` or a test
    /// may be waiting for the supervisor to write it).
    private let cached = Mutex<LabRecord?>(nil)

    public init(name: String, runtimeRoot: String) {
        self.name = name
        self.runtimeRoot = runtimeRoot
    }

    /// The record: read from `lab.json` the first time, kept after. nil when
    /// the lab has no record (or no runtime dir that passes the checks);
    /// throws for a record that does not decode, naming the file and field.
    public func read() throws(RecordFileError) -> LabRecord? {
        try cached.withLock { (cached) throws(RecordFileError) -> LabRecord? in
            if let cached { return cached }
            cached = try load()
            return cached
        }
    }

    /// Reads `lab.json` again: only where another process (the supervisor)
    /// may have written it since this store read it.
    @discardableResult
    public func reload() throws(RecordFileError) -> LabRecord? {
        try cached.withLock { (cached) throws(RecordFileError) -> LabRecord? in
            cached = nil
            cached = try load()
            return cached
        }
    }

    /// Replaces `lab.json` (atomically) in the lab's existing runtime dir; the
    /// store keeps the record once it is written.
    public func write(_ record: LabRecord) throws {
        try cached.withLock { cached in
            try writeFile(record)
            cached = record
        }
    }

    /// Reads the record as this store holds it, changes it and writes it, all
    /// under the store's lock (so two tasks of one session do not lose each
    /// other's change); the caller holds the lab's lock against other
    /// processes. The store's copy changes only once written.
    @discardableResult
    public func update(_ change: (inout LabRecord) throws -> Void) throws -> LabRecord {
        try cached.withLock { cached in
            if cached == nil { cached = try load() }
            guard var record = cached else { throw LabError.notRunning(name) }
            try change(&record)
            try writeFile(record)
            cached = record
            return record
        }
    }

    /// `lab.json` was removed (``LabRuntime/removeRuntimeFiles()``): the store holds no record.
    func forget() {
        cached.withLock { $0 = nil }
    }

    private func directory() throws(UnsafeDirectoryError) -> PrivateDirectory? {
        try PrivateDirectory.open(runtimeRoot, role: .runtime, create: false)?.subdirectory(name, create: false)
    }

    private func writeFile(_ record: LabRecord) throws {
        guard let directory = try directory() else { throw LabError.notRunning(name) }
        // Not fsynced: a running lab's record does not outlive a reboot (see FileSystem.writeAtomically).
        try directory.writeJSON(LabRuntime.recordFile, try JSONValueEncoder().encode(record), durable: false)
    }

    /// `lab.json` from the checked runtime dir; nil when there is none.
    private func load() throws(RecordFileError) -> LabRecord? {
        guard let directory = try? directory(), let bytes = directory.read(LabRuntime.recordFile) else { return nil }
        return try RecordFileError.decode(LabRecord.self, from: bytes, path: directory.path(LabRuntime.recordFile))
    }
}
