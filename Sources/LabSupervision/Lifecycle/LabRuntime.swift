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

    public func takeLock(timeout: Duration = .seconds(30)) async throws -> FileLock {
        guard let root = try runtimeRootDirectory(create: true) else { throw LabError.system("cannot create \(runtimeRoot)") }
        return try await FileLock(in: root, name: name + ".lock", timeout: timeout)
    }

    /// The lock of a lab that must be running: a lab that is not running
    /// gets its error before any lock file is created, and so does one whose
    /// record does not decode (``RecordFileError``, naming the file and field).
    public func takeLockOfRunningLab(timeout: Duration = .seconds(30)) async throws -> FileLock {
        try checkDirectories()
        guard let record = try records.read(), liveQEMU(record) != nil else { throw LabError.notRunning(name) }
        return try await takeLock(timeout: timeout)
    }

    // MARK: records

    /// `lab.json` as ``records`` holds it (read once, from a runtime dir that
    /// passes the checks: a record anyone else could have written is never
    /// trusted). A record that does not decode counts as none here;
    /// `records.read()` says what is wrong with it.
    public var record: LabRecord? {
        try? records.read()
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
        root.removeDirectory(name)
        records.forget()
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

/// `lab.json`: what `up` started and decided, for later commands.
public struct LabRecord: Sendable {
    public var name: String
    public var labFile: String
    public var guest: String
    public var qemuPID: Int32
    public var supervisorPID: Int32
    /// Start times (/proc/PID/stat field 22) of the two, taken at launch:
    /// a pid is signalled only while it still has its start time.
    public var qemuStartTime: UInt64?
    public var supervisorStartTime: UInt64?
    public var foreground: Bool
    public var startedAt: Double
    public var accel: AccelDecision
    public var consoleLog: String?
    /// Each lab device and how it is attached now.
    public var devices: [RecordedDevice]
    /// Host PCI addresses of passthrough devices: for conflicts between labs.
    public var passthroughHosts: [RecordedPassthrough]
    public var qemuLogOffset: Int
    /// The console log's size when QEMU started: this boot's console output begins there.
    public var consoleLogOffset: Int
    /// The lab file's text as planned (``Lab/source``): later commands re-make
    /// the running lab from it, never from the file as edited since. nil in
    /// records written before qlab kept it.
    public var labSource: String?
    /// What the planner found this QEMU binary can do (hotplug spells options the same way).
    public var capabilities = QEMUCapabilities()
    /// The command line QEMU was started with (empty in older records).
    public var argv: [String] = []
    /// The revert method and the RAM files (nil in older records: loadvm).
    public var revert: RevertRecord?

    public init(
        name: String, labFile: String, guest: String, qemuPID: Int32, supervisorPID: Int32, foreground: Bool,
        startedAt: Double, accel: AccelDecision, consoleLog: String?, devices: [(name: String, state: DeviceState)],
        passthroughHosts: [(device: String, host: String)], qemuLogOffset: Int, consoleLogOffset: Int = 0
    ) {
        self.name = name
        self.labFile = labFile
        self.guest = guest
        self.qemuPID = qemuPID
        self.supervisorPID = supervisorPID
        self.foreground = foreground
        self.startedAt = startedAt
        self.accel = accel
        self.consoleLog = consoleLog
        self.devices = devices.map { RecordedDevice(name: $0.name, state: $0.state) }
        self.passthroughHosts = passthroughHosts.map { RecordedPassthrough(device: $0.device, host: $0.host) }
        self.qemuLogOffset = qemuLogOffset
        self.consoleLogOffset = consoleLogOffset
    }

    /// The record as `lab.json` holds it (``JSONValueEncoder``; nil optionals as null).
    public var json: JSONValue {
        (try? JSONValueEncoder().encode(self)) ?? .null
    }

    /// A record read from `lab.json`; nil for one `up` did not write (see ``init(from:)``).
    public init?(_ json: JSONValue) {
        guard let record = try? JSONValueDecoder().decode(LabRecord.self, from: json) else { return nil }
        self = record
    }
}

/// One device of ``LabRecord/devices``: `{"name": ..., "state": "boot"|"hotplug"|"detached"}`.
public struct RecordedDevice: Sendable, Hashable, Codable {
    public var name: String
    public var state: DeviceState

    public init(name: String, state: DeviceState) {
        self.name = name
        self.state = state
    }
}

/// One passthrough device of ``LabRecord/passthroughHosts``: `{"device": ..., "host": "0000:01:00.0"}`.
public struct RecordedPassthrough: Sendable, Hashable, Codable {
    public var device: String
    public var host: String

    public init(device: String, host: String) {
        self.device = device
        self.host = host
    }
}

extension LabRecord: Codable {
    enum CodingKeys: String, CodingKey {
        case name, guest, foreground, accel, devices, argv
        case labFile = "lab_file"
        case qemuPID = "qemu_pid"
        case supervisorPID = "supervisor_pid"
        case qemuStartTime = "qemu_start_time"
        case supervisorStartTime = "supervisor_start_time"
        case startedAt = "started_at"
        case consoleLog = "console_log"
        case passthroughHosts = "passthrough"
        case qemuLogOffset = "qemu_log_offset"
        case consoleLogOffset = "console_log_offset"
        case labSource = "lab_source"
        case capabilities = "qemu_capabilities"
        case revert
    }

    /// Name, lab file (not empty), guest, QEMU pid and accelerator are
    /// required: a record without them is not one `up` wrote, and is refused
    /// rather than read with defaults. Fields later versions added default.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        labFile = try c.decode(String.self, forKey: .labFile)
        guard !labFile.isEmpty else {
            throw DecodingError.dataCorruptedError(forKey: .labFile, in: c, debugDescription: "a lab record names its lab file")
        }
        guest = try c.decode(String.self, forKey: .guest)
        qemuPID = try c.decode(Int32.self, forKey: .qemuPID)
        accel = try c.decode(AccelDecision.self, forKey: .accel)
        supervisorPID = try c.decodeIfPresent(Int32.self, forKey: .supervisorPID) ?? 0
        qemuStartTime = try c.decodeIfPresent(UInt64.self, forKey: .qemuStartTime)
        supervisorStartTime = try c.decodeIfPresent(UInt64.self, forKey: .supervisorStartTime)
        foreground = try c.decodeIfPresent(Bool.self, forKey: .foreground) ?? false
        startedAt = try c.decodeIfPresent(Double.self, forKey: .startedAt) ?? 0
        consoleLog = try c.decodeIfPresent(String.self, forKey: .consoleLog)
        devices = try c.decodeIfPresent([RecordedDevice].self, forKey: .devices) ?? []
        passthroughHosts = try c.decodeIfPresent([RecordedPassthrough].self, forKey: .passthroughHosts) ?? []
        qemuLogOffset = try c.decodeIfPresent(Int.self, forKey: .qemuLogOffset) ?? 0
        consoleLogOffset = try c.decodeIfPresent(Int.self, forKey: .consoleLogOffset) ?? 0
        labSource = try c.decodeIfPresent(String.self, forKey: .labSource)
        capabilities = try c.decodeIfPresent(QEMUCapabilities.self, forKey: .capabilities) ?? QEMUCapabilities()
        argv = try c.decodeIfPresent([String].self, forKey: .argv) ?? []
        revert = try c.decodeIfPresent(RevertRecord.self, forKey: .revert)
    }
}

/// `last-exit.json`: how QEMU ended, written by the supervisor (or by `down`
/// when the supervisor was gone).
public struct ExitRecord: Sendable {
    /// nil when unknown (QEMU was not our child any more).
    public var exit: ProcessExit?
    public var at: Double
    /// True when `down` (or the foreground supervisor's signal) asked for it.
    public var requested: Bool
    /// QEMU's stderr from this run, tail.
    public var qemuOutput: String
    public var diagnoses: [Diagnosis]

    public init(exit: ProcessExit?, at: Double, requested: Bool, qemuOutput: String, diagnoses: [Diagnosis]) {
        self.exit = exit
        self.at = at
        self.requested = requested
        self.qemuOutput = qemuOutput
        self.diagnoses = diagnoses
    }

    /// A crash: QEMU ended on its own with a signal or a failure status.
    public var crashed: Bool {
        guard !requested else { return false }
        switch exit {
        case .exited(0): return false
        case nil: return true
        default: return true
        }
    }

    public var exitDescription: String { exit?.description ?? "ended while unsupervised (status unknown)" }

    /// The record as `last-exit.json` holds it (``JSONValueEncoder``, see ExitRecordCoding.swift).
    public var json: JSONValue {
        (try? JSONValueEncoder().encode(self)) ?? .null
    }

    public init?(_ json: JSONValue) {
        guard let record = try? JSONValueDecoder().decode(ExitRecord.self, from: json) else { return nil }
        self = record
    }
}

/// Seconds since the epoch, from `clock_gettime(CLOCK_REALTIME)` (``UTCTime/now()``).
public func wallClockSeconds() -> Double { UTCTime.now() }
