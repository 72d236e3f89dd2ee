import Platform
import QMP

/// Where a lab's runtime files (sockets, record, lock) and state files
/// (overlays, logs, event log) live, and the records kept there. Both trees
/// are used only when private to the user (``PrivateDirectory``,
/// docs/runtime-directories.md).
///
///     RUNTIME/                0700
///     RUNTIME/LAB.lock        flock(2): one changing command at a time
///     RUNTIME/LAB/            0700: qmp.sock supervisor.sock console.sock (0600) qemu.pid lab.json
///     STATE/LAB/              events.jsonl qemu.log last-exit.json GUEST/disk.qcow2 ...
public struct LabRuntime: Sendable {
    public let name: String
    public let runtimeRoot: String
    public let stateRoot: String
    /// Where the lab's RAM directory is made (``LabDirectories/ramRoot(environment:uid:)``);
    /// a running lab's record names its own (``RevertRecord/ramDirectory``).
    public let ramRoot: String
    /// `lab.json`, read once and kept (shared by every copy of this value).
    public let records: LabRecordStore

    /// `ramRoot` nil: from this process's environment for `runtimeRoot`.
    public init(name: String, runtimeRoot: String, stateRoot: String, ramRoot: String? = nil) {
        self.name = name
        self.runtimeRoot = runtimeRoot
        self.stateRoot = stateRoot
        if let ramRoot {
            self.ramRoot = ramRoot
        } else {
            var environment = currentEnvironment()
            if environment["QLAB_RAM_DIR"]?.isEmpty ?? true { environment["QLAB_RUNTIME_DIR"] = runtimeRoot }
            self.ramRoot = LabDirectories.ramRoot(environment: environment, uid: ThisProcess.userID)
        }
        self.records = LabRecordStore(name: name, runtimeRoot: runtimeRoot)
    }

    /// The lab's runtime under the standard roots for this user and environment.
    public init(name: String, environment: [String: String] = currentEnvironment()) {
        self.init(
            name: name,
            runtimeRoot: LabDirectories.runtimeRoot(environment: environment, uid: ThisProcess.userID),
            stateRoot: LabDirectories.stateRoot(environment: environment),
            ramRoot: LabDirectories.ramRoot(environment: environment, uid: ThisProcess.userID))
    }

    public var directory: String { runtimeRoot + "/" + name }
    public var stateDirectory: String { stateRoot + "/" + name }
    public var lockPath: String { runtimeRoot + "/" + name + ".lock" }
    public var qmpSocketPath: String { directory + "/qmp.sock" }
    public var supervisorSocketPath: String { directory + "/supervisor.sock" }
    public var consoleSocketPath: String { directory + "/console.sock" }
    public var pidFilePath: String { directory + "/qemu.pid" }
    public var recordPath: String { directory + "/lab.json" }
    /// Written by `down` before it asks QEMU to quit, so the exit counts as requested.
    public var stopRequestPath: String { directory + "/stop-requested" }
    public var eventLogPath: String { stateDirectory + "/events.jsonl" }
    public var qemuLogPath: String { stateDirectory + "/qemu.log" }
    public var supervisorLogPath: String { stateDirectory + "/supervisor.log" }
    public var exitRecordPath: String { stateDirectory + "/last-exit.json" }
    public var launchSpecPath: String { directory + "/launch.json" }
    /// The supervisor's control socket (fast reverts: ``SupervisorControl``).
    public var controlSocketPath: String { directory + "/control.sock" }
    /// RAMDIR: guest RAM files of a fast-revert lab (live.ram, snap-TAG.ram).
    public var ramDirectoryPath: String { ramRoot + "/" + name }

    /// The lab-wide QMP trace (`trace_qmp: true`): JSON Lines, every client of the lab appends.
    public var qmpTracePath: String { stateDirectory + "/qmp-trace.jsonl" }

    /// A tracer appending to ``qmpTracePath`` as `client` (with this process's pid); nil when it cannot be opened.
    public func labTracer(client: String = LabRuntime.clientName) -> (any QMPTracer)? {
        try? QMPTraceFile(path: qmpTracePath, client: "\(client) (pid \(ThisProcess.id))")
    }

    /// Whether the running lab keeps a QMP trace (`trace_qmp: true`, from its launch spec).
    public var tracesQMP: Bool { (try? LaunchSpec.read(path: launchSpecPath))?.traceQMP ?? false }

    /// Connects to the lab's QMP monitor: every qlab command does it here, so a lab with
    /// `trace_qmp: true` gets every command's messages in its trace (and `--trace-qmp` too: ``QMPTracing``).
    public func connectQMP(timeout: Duration = .seconds(5)) async throws -> QMPClient {
        try await QMPClient.connect(path: qmpSocketPath, timeout: timeout, tracer: tracesQMP ? labTracer() : nil)
    }

    /// How this process appears in a lab's QMP trace: "qlab run", "qlab status".
    public static var clientName: String {
        (["qlab"] + CommandLine.arguments.dropFirst().prefix { !$0.hasPrefix("-") }.prefix(1)).joined(separator: " ")
    }
    /// The guest agent's socket: a lab with an agent channel has QEMU serve
    /// it here (`-chardev socket,path=RUNTIME/LAB/qga.sock,server=on,wait=off,id=qga0`).
    public var agentSocketPath: String { directory + "/qga.sock" }
    /// The lab file this lab was last started from, kept with its state so that
    /// `qlab up NAME` starts it again after `down`.
    public var labFileRecordPath: String { stateDirectory + "/lab-file.json" }

    // MARK: directories (see docs/runtime-directories.md)

    /// The runtime root, checked as a ``PrivateDirectory`` (this user's alone,
    /// nothing on its path another user can change); nil when it does not
    /// exist and `create` is false. Throws for one that fails the checks.
    public func runtimeRootDirectory(create: Bool) throws(UnsafeDirectoryError) -> PrivateDirectory? {
        try PrivateDirectory.open(runtimeRoot, role: .runtime, create: create)
    }

    /// `RUNTIME/LAB`, checked like its root; nil when missing and not `create`.
    public func runtimeDirectory(create: Bool) throws(UnsafeDirectoryError) -> PrivateDirectory? {
        try runtimeRootDirectory(create: create)?.subdirectory(name, create: create)
    }

    /// The state root, checked like the runtime root.
    public func stateRootDirectory(create: Bool) throws(UnsafeDirectoryError) -> PrivateDirectory? {
        try PrivateDirectory.open(stateRoot, role: .state, create: create)
    }

    /// `STATE/LAB`, checked; nil when missing and not `create`.
    public func labStateDirectory(create: Bool) throws(UnsafeDirectoryError) -> PrivateDirectory? {
        try stateRootDirectory(create: create)?.subdirectory(name, create: create)
    }

    /// RAMDIR (``ramDirectoryPath``, or the one `path` names), checked like
    /// the runtime dir; nil when missing and not `create`.
    public func ramDirectory(path: String? = nil, create: Bool) throws(UnsafeDirectoryError) -> PrivateDirectory? {
        let path = path ?? ramDirectoryPath
        return try PrivateDirectory.open(Paths.directory(of: path), role: .ram, create: create)?.subdirectory(Paths.baseName(path), create: create)
    }

    /// Removes RAMDIR and the RAM files in it (`path`: the one a record names,
    /// else ``ramDirectoryPath``); the RAM root goes too once empty. Returns the bytes freed.
    @discardableResult
    public func removeRAMFiles(path: String? = nil) -> Int {
        let path = path ?? ramDirectoryPath
        guard let root = try? PrivateDirectory.open(Paths.directory(of: path), role: .ram, create: false), root.contains(Paths.baseName(path)) else { return 0 }
        let bytes = root.removeTree(Paths.baseName(path))
        // The root is ours (checked above); rmdir(2) takes it only when empty.
        if root.names().isEmpty { FileSystem.removeEmptyDirectory(root.path) }
        return bytes
    }

    /// Checks every directory of this lab that exists (both roots and the
    /// lab's own) and makes none: a command on a lab that does not exist
    /// touches nothing, and one on a directory another user can change stops here.
    public func checkDirectories() throws(UnsafeDirectoryError) {
        _ = try runtimeDirectory(create: false)
        _ = try labStateDirectory(create: false)
    }

    /// Creates (or checks) the runtime root, the lab's runtime dir and its state dir, all 0700.
    public func makeDirectories() throws {
        _ = try runtimeDirectory(create: true)
        _ = try labStateDirectory(create: true)
    }

    /// The lab's lock (`RUNTIME/LAB.lock`): one changing command at a time.
    /// Released with no runtime dir left (the lab is down), the file goes too.
    ///
    /// `checkingOwner`: a lab that belongs to a running command (``LabRecord/owner``,
    /// a `qlab run`) is refused with ``LabError/owned(lab:owner:)`` unless this
    /// process is that command or works for it (its hooks). The record is read
    /// again under the lock: the owner is whoever it says now, verified by pid
    /// and start time. Only the lab's supervisor, which serves the owner, skips it.
    public func takeLock(timeout: Duration = .seconds(30), checkingOwner: Bool = true) async throws -> FileLock {
        guard let root = try runtimeRootDirectory(create: true) else { throw LabError.system("cannot create \(runtimeRoot)") }
        let directory = self.directory
        let lock = try await FileLock(in: root, name: name + ".lock", timeout: timeout) { !FileSystem.entryExists(directory) }
        if checkingOwner, let owner = liveOwner() {
            throw LabError.owned(lab: name, owner: owner)
        }
        return lock
    }

    /// The running command the lab belongs to, when there is one and it is
    /// not this process (nor one working for it): from `lab.json` read again
    /// (another process writes it). A record that does not decode names no owner here;
    /// the caller meets its error when it reads the record.
    public func liveOwner() -> LabOwner? {
        guard let record = (try? records.reload()) ?? nil, let owner = record.owner, owner.isAlive, !owner.includesThisProcess else { return nil }
        return owner
    }

    /// The lock of a lab that must be running: a lab that is not running
    /// gets its error before any lock file is created, and so does one whose
    /// record does not decode (``RecordFileError``, naming the file and field).
    public func takeLockOfRunningLab(timeout: Duration = .seconds(30)) async throws -> FileLock {
        try checkDirectories()
        guard let record = try records.read(), liveQEMU(record) != nil else { throw LabError.notRunning(name) }
        let lock = try await takeLock(timeout: timeout)
        // Read again under the lock (takeLock did): the lab may have stopped while this waited.
        guard let current = try records.read(), liveQEMU(current) != nil else { throw LabError.notRunning(name) }
        return lock
    }

    // MARK: records

    /// `lab.json` as ``records`` holds it (read once, from a runtime dir that
    /// passes the checks: a record anyone else could have written is never
    /// trusted); nil when the lab has none. A record that does not decode is
    /// an error naming the file and field, never "not running": its QEMU may run.
    public var record: LabRecord? {
        get throws(RecordFileError) { try records.read() }
    }

    /// `last-exit.json`, read only from a state dir that passes the checks.
    public var exitRecord: ExitRecord? {
        guard let directory = try? labStateDirectory(create: false), let bytes = directory.read(Self.exitRecordFile) else { return nil }
        return try? RecordFileError.decode(ExitRecord.self, from: bytes, path: directory.path(Self.exitRecordFile))
    }

    /// Replaces `lab.json` (atomically) in the lab's existing runtime dir, through ``records``.
    public func writeRecord(_ record: LabRecord) throws {
        try records.write(record)
    }

    /// Replaces `last-exit.json` in the lab's state dir (made when missing).
    public func writeExitRecord(_ record: ExitRecord) throws {
        guard let directory = try labStateDirectory(create: true) else { return }
        try directory.writeJSON(Self.exitRecordFile, try JSONValueEncoder().encode(record))
    }

    /// Writes `launch.json` in the lab's existing runtime dir.
    public func writeLaunchSpec(_ spec: LaunchSpec) throws {
        guard let directory = try runtimeDirectory(create: false) else { throw LabError.notRunning(name) }
        // Read once by the supervisor it is written for: not fsynced (see FileSystem.writeAtomically).
        try directory.writeJSON(Self.launchSpecFile, try JSONValueEncoder().encode(spec), durable: false)
    }

    /// The lab file of the last `up` (`lab-file.json` in the checked state
    /// dir); nil when there is none. One that does not decode counts as none
    /// (`up LAB-FILE` writes it again); ``readLastLabFile()`` says why.
    public var lastLabFile: String? {
        try? readLastLabFile()
    }

    /// `lab-file.json`; nil when missing, a ``RecordFileError`` naming the file and field when it does not decode.
    public func readLastLabFile() throws -> String? {
        guard let directory = try labStateDirectory(create: false), let bytes = directory.read(Self.labFileRecordFile) else { return nil }
        return try RecordFileError.decode(LastLabFile.self, from: bytes, path: directory.path(Self.labFileRecordFile)).labFile
    }

    public func writeLastLabFile(_ file: String) throws {
        try labStateDirectory(create: true)?.writeJSON(Self.labFileRecordFile, try JSONValueEncoder().encode(LastLabFile(labFile: file)))
    }

    /// Marks the coming exit as requested (`stop-requested`, see ``stopRequestPath``).
    public func requestStop() throws {
        try runtimeDirectory(create: false)?.writeAtomically(Self.stopRequestFile, [], durable: false)
    }

    public var stopRequested: Bool {
        (try? runtimeDirectory(create: false))??.contains(Self.stopRequestFile) ?? false
    }

    static let recordFile = "lab.json"
    static let exitRecordFile = "last-exit.json"
    static let launchSpecFile = "launch.json"
    static let stopRequestFile = "stop-requested"
    static let labFileRecordFile = "lab-file.json"

    /// The QEMU of this lab when it is alive and really is this lab's: pids
    /// get reused, so it must have the start time the supervisor recorded and
    /// a command line naming the lab's QMP socket. (A record written before
    /// qlab kept start times has only the command line to go by.)
    public func liveQEMU(_ record: LabRecord) -> Int32? {
        let alive = record.qemuStartTime == nil
            ? ProcessTable.isRunning(record.qemuPID) : ProcessIdentity.matches(record.qemuPID, startTime: record.qemuStartTime)
        guard alive else { return nil }
        let argv = ProcessTable.commandLine(record.qemuPID)
        return argv.contains(where: { $0.contains(qmpSocketPath) }) ? record.qemuPID : nil
    }

    /// The lab's supervisor when it is alive, has the start time it recorded
    /// for itself (a reused pid is not it) and is a qlab supervising this
    /// lab (`_supervise` of its launch spec, or `up --foreground`); nil otherwise.
    public func liveSupervisor(_ record: LabRecord) -> Int32? {
        guard ProcessIdentity.matches(record.supervisorPID, startTime: record.supervisorStartTime) else { return nil }
        let argv = ProcessTable.commandLine(record.supervisorPID)
        let supervising = record.foreground ? argv.contains("--foreground") : argv.contains("_supervise") && argv.contains(launchSpecPath)
        return supervising ? record.supervisorPID : nil
    }

    /// Removes sockets, pid file and record (`unlinkat(2)` in the checked
    /// runtime dir; nothing in one that fails the checks): what a stopped lab
    /// leaves is its state dir.
    public func removeRuntimeFiles() {
        guard let root = try? runtimeRootDirectory(create: false), let directory = try? root.subdirectory(name, create: false) else { return }
        for path in [qmpSocketPath, supervisorSocketPath, consoleSocketPath, agentSocketPath, pidFilePath, recordPath, stopRequestPath, launchSpecPath, controlSocketPath] {
            directory.remove(Paths.baseName(path))
        }
        directory.remove(ConsoleClaim.fileName)
        root.removeDirectory(name)
        records.forget()
    }

    /// Removes `RUNTIME/NAME.lock` of every lab that has no runtime dir, when
    /// no process holds it (one non-blocking `flock(2)` each: a held lock is
    /// left to its holder, whose release removes it).
    public static func removeUnheldLockFiles(environment: [String: String] = currentEnvironment()) async {
        let root = LabDirectories.runtimeRoot(environment: environment, uid: ThisProcess.userID)
        guard let names = (try? PrivateDirectory.open(root, role: .runtime, create: false))??.names() else { return }
        for name in names where name.hasSuffix(".lock") {
            let lab = LabRuntime(name: String(name.dropLast(5)), runtimeRoot: root, stateRoot: LabDirectories.stateRoot(environment: environment))
            guard LabName.isValid(lab.name), !names.contains(lab.name) else { continue }
            _ = try? await lab.takeLock(timeout: .zero, checkingOwner: false)
        }
    }

    /// Every lab with a runtime dir under the runtime root (none when it does
    /// not exist; an error when it fails the checks).
    public static func all(environment: [String: String] = currentEnvironment()) throws -> [LabRuntime] {
        let root = LabDirectories.runtimeRoot(environment: environment, uid: ThisProcess.userID)
        let state = LabDirectories.stateRoot(environment: environment)
        let names = try PrivateDirectory.open(root, role: .runtime, create: false)?.names() ?? []
        return names.filter { !$0.hasSuffix(".lock") && LabName.isValid($0) }.map {
            LabRuntime(name: $0, runtimeRoot: root, stateRoot: state)
        }
    }
}
