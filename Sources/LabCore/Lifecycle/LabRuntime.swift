#if canImport(Glibc)
import Glibc
#endif
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

    public init(name: String, runtimeRoot: String, stateRoot: String) {
        self.name = name
        self.runtimeRoot = runtimeRoot
        self.stateRoot = stateRoot
    }

    /// The lab's runtime under the standard roots for this user and environment.
    public init(name: String, environment: [String: String] = currentEnvironment()) {
        self.init(
            name: name,
            runtimeRoot: LabDirectories.runtimeRoot(environment: environment, uid: getuid()),
            stateRoot: LabDirectories.stateRoot(environment: environment))
    }

    /// A lab by name, or by lab file (whose `name:` is used). Its directories
    /// that exist are checked (``checkDirectories()``): a command on a lab
    /// whose runtime or state dir another user can change stops here.
    public static func locate(_ nameOrFile: String, environment: [String: String] = currentEnvironment()) throws -> LabRuntime {
        let runtime: LabRuntime
        if isLabFile(nameOrFile) {
            let lab = try Lab.load(path: nameOrFile)
            runtime = LabRuntime(name: lab.name, environment: environment)
        } else {
            guard LabName.isValid(nameOrFile) else { throw LabError.unknownLab(nameOrFile) }
            runtime = LabRuntime(name: nameOrFile, environment: environment)
        }
        try runtime.checkDirectories()
        return runtime
    }

    /// `locate`, for commands on an existing lab: a lab file always names one;
    /// a bare name must have a record or state here, else `unknownLab` with
    /// the nearest known name. Creates nothing.
    public static func locateExisting(_ nameOrFile: String, environment: [String: String] = currentEnvironment()) throws -> LabRuntime {
        let runtime: LabRuntime
        do {
            runtime = try locate(nameOrFile, environment: environment)
        } catch LabError.unknownLab(let name, _) {
            throw LabError.unknownLab(name, suggestion: Suggestion.closest(to: name, in: (try? knownNames(environment: environment)) ?? []))
        }
        if isLabFile(nameOrFile) || FileSystem.entryExists(runtime.recordPath) || FileSystem.entryExists(runtime.stateDirectory) {
            return runtime
        }
        throw LabError.unknownLab(runtime.name, suggestion: Suggestion.closest(to: runtime.name, in: (try? knownNames(environment: environment)) ?? []))
    }

    /// Whether `locate` reads `nameOrFile` as a lab file's path rather than a name.
    public static func isLabFile(_ nameOrFile: String) -> Bool {
        nameOrFile.contains("/") || nameOrFile.hasSuffix(".yaml") || nameOrFile.hasSuffix(".yml")
    }

    /// Every lab with runtime files or state here, sorted (an error when a
    /// root fails the checks of ``PrivateDirectory``).
    public static func knownNames(environment: [String: String] = currentEnvironment()) throws -> [String] {
        let running = try all(environment: environment).map(\.name)
        let stateRoot = try PrivateDirectory.open(LabDirectories.stateRoot(environment: environment), role: .state, create: false)
        let stateful = (stateRoot?.names() ?? []).filter(LabName.isValid)
        return Set(running + stateful).sorted()
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
    /// The lab file this lab was last started from, kept with its state so that
    /// `qlab up NAME` starts it again after `down`.
    public var labFileRecordPath: String { stateDirectory + "/lab-file.json" }

    /// The lab file behind `nameOrFile`: the path itself, or for a name the file
    /// its running record or its last start names. `unknownLab` otherwise.
    public static func labFile(for nameOrFile: String, environment: [String: String] = currentEnvironment()) throws -> String {
        if isLabFile(nameOrFile) { return nameOrFile }
        let runtime = try locateExisting(nameOrFile, environment: environment)
        if let file = runtime.record?.labFile ?? runtime.lastLabFile {
            return file
        }
        throw LabError.unknownLab(nameOrFile, suggestion: nil)
    }

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
    /// gets its error before any lock file is created.
    public func takeLockOfRunningLab(timeout: Duration = .seconds(30)) async throws -> FileLock {
        try checkDirectories()
        guard let record, liveQEMU(record) != nil else { throw LabError.notRunning(name) }
        return try await takeLock(timeout: timeout)
    }

    // MARK: records

    /// `lab.json`, read only from a runtime dir that passes the checks (a
    /// record anyone else could have written is never trusted).
    public var record: LabRecord? {
        guard let directory = try? runtimeDirectory(create: false) else { return nil }
        return directory.readJSON(Self.recordFile).flatMap(LabRecord.init)
    }

    /// `last-exit.json`, read only from a state dir that passes the checks.
    public var exitRecord: ExitRecord? {
        guard let directory = try? labStateDirectory(create: false) else { return nil }
        return directory.readJSON(Self.exitRecordFile).flatMap(ExitRecord.init)
    }

    /// Replaces `lab.json` (atomically) in the lab's existing runtime dir.
    public func writeRecord(_ record: LabRecord) throws {
        guard let directory = try runtimeDirectory(create: false) else { throw LabError.notRunning(name) }
        try directory.writeJSON(Self.recordFile, record.json)
    }

    /// Replaces `last-exit.json` in the lab's state dir (made when missing).
    public func writeExitRecord(_ record: ExitRecord) throws {
        guard let directory = try labStateDirectory(create: true) else { return }
        try directory.writeJSON(Self.exitRecordFile, record.json)
    }

    /// Writes `launch.json` in the lab's existing runtime dir.
    public func writeLaunchSpec(_ spec: LaunchSpec) throws {
        guard let directory = try runtimeDirectory(create: false) else { throw LabError.notRunning(name) }
        try directory.writeJSON(Self.launchSpecFile, spec.json)
    }

    /// The lab file of the last `up` (`lab-file.json` in the checked state dir).
    public var lastLabFile: String? {
        guard let directory = try? labStateDirectory(create: false) else { return nil }
        return directory.readJSON(Self.labFileRecordFile)?["lab_file"]?.stringValue
    }

    public func writeLastLabFile(_ file: String) throws {
        try labStateDirectory(create: true)?.writeJSON(Self.labFileRecordFile, ["lab_file": .string(file)])
    }

    /// Marks the coming exit as requested (`stop-requested`, see ``stopRequestPath``).
    public func requestStop() throws {
        try runtimeDirectory(create: false)?.writeAtomically(Self.stopRequestFile, [])
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
        for path in [qmpSocketPath, supervisorSocketPath, consoleSocketPath, agentSocketPath, pidFilePath, recordPath, stopRequestPath, launchSpecPath] {
            directory.remove(LabPaths.baseName(path))
        }
        root.removeDirectory(name)
    }

    /// Every lab with a runtime dir under the runtime root (none when it does
    /// not exist; an error when it fails the checks).
    public static func all(environment: [String: String] = currentEnvironment()) throws -> [LabRuntime] {
        let root = LabDirectories.runtimeRoot(environment: environment, uid: getuid())
        let state = LabDirectories.stateRoot(environment: environment)
        let names = try PrivateDirectory.open(root, role: .runtime, create: false)?.names() ?? []
        return names.filter { !$0.hasSuffix(".lock") && LabName.isValid($0) }.map {
            LabRuntime(name: $0, runtimeRoot: root, stateRoot: state)
        }
    }
}

/// `lab.json`: what `up` started, for later commands.
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
    /// Device name → how it is attached now ("boot", "hotplug", or "detached").
    public var devices: [(name: String, state: String)]
    /// Host PCI addresses of passthrough devices: for conflicts between labs.
    public var passthroughHosts: [(device: String, host: String)]
    public var qemuLogOffset: Int
    /// The console log's size when QEMU started: this boot's console output begins there.
    public var consoleLogOffset: Int

    public init(
        name: String, labFile: String, guest: String, qemuPID: Int32, supervisorPID: Int32, foreground: Bool,
        startedAt: Double, accel: AccelDecision, consoleLog: String?, devices: [(name: String, state: String)],
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
        self.devices = devices
        self.passthroughHosts = passthroughHosts
        self.qemuLogOffset = qemuLogOffset
        self.consoleLogOffset = consoleLogOffset
    }

    public var json: JSONValue {
        .object([
            "name": .string(name), "lab_file": .string(labFile), "guest": .string(guest),
            "qemu_pid": JSONValue(qemuPID), "supervisor_pid": JSONValue(supervisorPID), "foreground": .bool(foreground),
            "qemu_start_time": qemuStartTime.map { JSONValue(Int64(clamping: $0)) } ?? .null,
            "supervisor_start_time": supervisorStartTime.map { JSONValue(Int64(clamping: $0)) } ?? .null,
            "started_at": .double(startedAt),
            "accel": ["accelerator": .string(accel.accelerator.rawValue), "reason": .string(accel.reason)],
            "console_log": consoleLog.map(JSONValue.string) ?? .null,
            "devices": .array(devices.map { ["name": .string($0.name), "state": .string($0.state)] }),
            "passthrough": .array(passthroughHosts.map { ["device": .string($0.device), "host": .string($0.host)] }),
            "qemu_log_offset": JSONValue(qemuLogOffset),
            "console_log_offset": JSONValue(consoleLogOffset),
        ])
    }

    public init?(_ json: JSONValue) {
        guard let name = json["name"]?.stringValue, let qemuPID = json["qemu_pid"]?.intValue,
            let accelName = json["accel"]?["accelerator"]?.stringValue,
            let accelerator = AccelDecision.Accelerator(rawValue: accelName)
        else { return nil }
        self.name = name
        self.labFile = json["lab_file"]?.stringValue ?? ""
        self.guest = json["guest"]?.stringValue ?? ""
        guard let pid = Int32(exactly: qemuPID) else { return nil }
        self.qemuPID = pid
        self.supervisorPID = Int32(clamping: json["supervisor_pid"]?.intValue ?? 0)
        self.qemuStartTime = json["qemu_start_time"]?.intValue.flatMap { $0 >= 0 ? UInt64($0) : nil }
        self.supervisorStartTime = json["supervisor_start_time"]?.intValue.flatMap { $0 >= 0 ? UInt64($0) : nil }
        self.foreground = json["foreground"]?.boolValue ?? false
        self.startedAt = json["started_at"]?.doubleValue ?? 0
        self.accel = AccelDecision(accelerator, reason: json["accel"]?["reason"]?.stringValue ?? "")
        self.consoleLog = json["console_log"]?.stringValue
        self.devices = (json["devices"]?.arrayValue ?? []).compactMap { entry in
            guard let name = entry["name"]?.stringValue, let state = entry["state"]?.stringValue else { return nil }
            return (name, state)
        }
        self.passthroughHosts = (json["passthrough"]?.arrayValue ?? []).compactMap { entry in
            guard let device = entry["device"]?.stringValue, let host = entry["host"]?.stringValue else { return nil }
            return (device, host)
        }
        self.qemuLogOffset = json["qemu_log_offset"]?.intValue ?? 0
        self.consoleLogOffset = json["console_log_offset"]?.intValue ?? 0
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

    public var json: JSONValue {
        var object: JSONObject = ["at": .double(at), "requested": .bool(requested)]
        switch exit {
        case .exited(let code): object["exit_code"] = JSONValue(code)
        case .signaled(let signal):
            object["signal"] = JSONValue(signal)
            object["signal_name"] = .string(signalName(signal))
        case nil: object["exit_code"] = .null
        }
        object["description"] = .string(exitDescription)
        object["qemu_output"] = .string(qemuOutput)
        object["diagnoses"] = .array(diagnoses.map(\.json))
        return .object(object)
    }

    public init?(_ json: JSONValue) {
        if let signal = json["signal"]?.intValue {
            exit = .signaled(Int32(clamping: signal))
        } else if let code = json["exit_code"]?.intValue {
            exit = .exited(Int32(clamping: code))
        } else {
            exit = nil
        }
        at = json["at"]?.doubleValue ?? 0
        requested = json["requested"]?.boolValue ?? false
        qemuOutput = json["qemu_output"]?.stringValue ?? ""
        diagnoses = (json["diagnoses"]?.arrayValue ?? []).compactMap(Diagnosis.init(json:))
    }
}

/// Seconds since the epoch, from `clock_gettime(CLOCK_REALTIME)`.
public func wallClockSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
