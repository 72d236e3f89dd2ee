import Logging
import Platform
import QMP

/// Starts, stops and inspects labs: the library behind `qlab up`, `down`,
/// `status` and `list`.
public struct LabController: Sendable {
    /// The executable that runs `_supervise` (the qlab binary).
    public var supervisorExecutable: String
    public var environment: [String: String]
    /// Where host PCI devices are looked up (doctor preflight, `ids:`).
    public var hostRoots: HostRoots

    public init(supervisorExecutable: String, environment: [String: String] = currentEnvironment(), hostRoots: HostRoots = .live) {
        self.supervisorExecutable = supervisorExecutable
        self.environment = environment
        self.hostRoots = hostRoots
    }

    public func runtime(_ name: String) -> LabRuntime { LabRuntime(name: name, environment: environment) }

    // MARK: up

    public struct UpOptions: Sendable {
        public var guest: String?
        /// Launch even when host checks fail.
        public var force = false
        /// Start with the CPUs stopped (`-S`).
        public var paused = false
        /// Replace the guest disk overlay with a fresh one (drops its snapshots).
        public var freshDisk = false
        /// The lab's own overlay, or `qlab run`'s (always fresh).
        public var overlays: OverlaySet = .lab
        /// The lab belongs to the caller (`qlab run`): it lives while the
        /// caller holds ``UpResult/ownership``, and its supervisor takes it
        /// down when the caller dies without doing so.
        public var owned = false
        /// A `qlab run --jobs` clone: the lab (same guest, `.testRun` overlays)
        /// whose run overlays are copied for this launch instead of fresh ones
        /// made. That lab's VM must be stopped at its ready snapshot meanwhile.
        public var cloneOf: Lab?
        /// Lab devices this launch leaves off QEMU's command line (``LabPlanner/Options/leftOutDevices``).
        public var leftOutDevices: [String] = []
        /// `--wait`: whether a card another lab holds is waited for (``CardReservation``).
        public var wait: WaitPolicy = .no
        /// Told who holds a card while this waits (once, then on each change).
        public var onWait: @Sendable (String) -> Void = { _ in }
        /// The cards already reserved by the caller (`qlab run` holds them for the
        /// whole run); nil: `up` reserves the lab's cards itself.
        public var reservation: CardReservation?
        public init(
            guest: String? = nil, force: Bool = false, paused: Bool = false, freshDisk: Bool = false, overlays: OverlaySet = .lab,
            owned: Bool = false
        ) {
            self.guest = guest
            self.force = force
            self.paused = paused
            self.freshDisk = freshDisk
            self.overlays = overlays
            self.owned = owned
        }
    }

    public struct UpResult: Sendable {
        public var record: LabRecord
        public var status: VMStatus
        public var runtime: LabRuntime
        /// For an owned lab: hold it while the lab is needed; release it after `down`.
        public var ownership: LabOwnership?
    }

    /// Everything `up` decides before starting anything: the command line and the record.
    public func prepare(lab: Lab, options: UpOptions) throws -> LaunchSpec {
        try plan(lab: lab, options: options).spec
    }

    /// The planner `up` and `qlab args` share (``LabPlanner``): this controller's directories and host.
    public var planner: LabPlanner {
        let runtime = self.runtime("")
        return LabPlanner(runtimeRoot: runtime.runtimeRoot, stateRoot: runtime.stateRoot, hostRoots: hostRoots, environment: environment)
    }

    /// The launch plan and the spec the supervisor runs (the plan's argv and record).
    func plan(lab: Lab, options: UpOptions) throws -> (spec: LaunchSpec, plan: LaunchPlan) {
        let plan = try planner.plan(lab: lab, guest: options.guest, options: LabPlanner.Options(paused: options.paused, overlays: options.overlays, leftOutDevices: options.leftOutDevices))
        let runtime = self.runtime(lab.name)
        var spec = LaunchSpec(argv: plan.argv, record: plan.record(), runtimeRoot: runtime.runtimeRoot, stateRoot: runtime.stateRoot)
        spec.traceQMP = lab.traceQMP
        // The lab belongs to this command (`qlab run`) while it runs: recorded once, here.
        if options.owned { spec.record.owner = LabOwner.thisProcess(at: spec.record.startedAt) }
        return (spec, plan)
    }

    /// `qlab up`: checks, overlays, then QEMU under a detached supervisor.
    /// Returns once QMP answers. On failure nothing is left running; nor
    /// when this process dies or the task is cancelled during the launch
    /// (the supervisor watches an owner pipe until it is ready).
    public func up(labFile: String, options: UpOptions) async throws -> UpResult {
        try await up(lab: try Lab.load(path: labFile), options: options)
    }

    /// `up` of a lab already read (``TestRunner`` boots the lab it planned its matrix from).
    public func up(lab: Lab, options: UpOptions) async throws -> UpResult {
        LabCoreLog.logger.debug("up", metadata: ["lab": "\(lab.name)", "guest": "\(options.guest ?? "(first)")"])
        // `up --wait` of a lab in use waits for it to end (without --wait: "already running", below).
        if options.wait != .no && options.reservation == nil { try await waitForLab(lab.name, wait: options.wait, onWait: options.onWait) }
        // The cards first, before the lab's lock: a wait for a card must not hold up commands on the lab.
        let ownReservation = options.reservation == nil
        var reservation = options.reservation
        if reservation == nil { reservation = try await reserveCards(lab: lab, options: options) }
        let owner = try LabOwnership.makePipe()
        let ownership = LabOwnership(writeEnd: owner.write)
        defer { FileDescriptor(rawValue: owner.read).closeIgnoringErrors() }
        let (initialSpec, lock) = try await prepareLaunch(lab: lab, options: options, foreground: false)
        var spec = initialSpec
        let runtime = self.runtime(lab.name)

        // The supervisor reports on a pipe: "ready PID STATUS RUNNING" or "failed" (``SupervisorProcess/ReadyLine``).
        let (readyRead, readyWrite) = try FileDescriptor.pipeCloseOnExec()
        let ends = [readyRead.rawValue, readyWrite.rawValue]
        let supervisor: ChildProcess
        do {
            guard let state = try runtime.labStateDirectory(create: false) else { throw LabError.system("\(runtime.stateDirectory) is missing") }
            let log = try state.openForAppending(Paths.baseName(runtime.supervisorLogPath))
            defer { FileDescriptor(rawValue: log).closeIgnoringErrors() }
            let executable = Self.supervisorProgram(qlab: supervisorExecutable)
            if executable == supervisorExecutable {
                try? state.appendLine(
                    Paths.baseName(runtime.supervisorLogPath),
                    "qlab: no qlab-supervisor next to \(supervisorExecutable); supervising with `qlab _supervise` (links Foundation, more memory)")
            }
            var arguments = SupervisorProcess.Arguments(specPath: runtime.launchSpecPath, readyFD: ends[1], ownerFD: owner.read, owned: options.owned)
            arguments.cardFDs = reservation?.descriptors ?? []
            supervisor = try ChildProcess.spawn(
                executable: executable,
                arguments: arguments.argv,
                environment: environment, stdin: .null, stdout: .descriptor(log),
                stderr: .descriptor(log), keepDescriptors: [ends[1], owner.read] + (reservation?.descriptors ?? []), newSession: true)
            // The supervisor keeps the cards as long as the lab runs: it is their holder now.
            if ownReservation, let reservation {
                reservation.recordHolder(command: LabOwner.commandText(CommandLine.arguments) + " (its supervisor)", pid: supervisor.pid)
            }
        } catch {
            readyRead.closeIgnoringErrors()
            readyWrite.closeIgnoringErrors()
            runtime.removeRuntimeFiles()
            throw error
        }
        readyWrite.closeIgnoringErrors()
        let message = await Self.readLine(ends[0], timeout: .seconds(90))
        readyRead.closeIgnoringErrors()

        if Task.isCancelled && !message.hasPrefix("ready") {
            await abandonLaunch(supervisor: supervisor, ownership: ownership, runtime: runtime, lock: lock)
            throw CancellationError()
        }
        if message.hasPrefix("ready") {
            // The supervisor runs on in its own session. It stays this process's child: reaped
            // whenever it ends, so a long-lived caller (`qlab run`, a test) keeps no zombie of it.
            supervisor.reapWhenEnded()
            if !options.owned { ownership.release() }
            let status: VMStatus
            if let reported = SupervisorProcess.ReadyLine(message)?.status {
                status = reported
            } else {
                // A supervisor that did not say (it could not ask): ask QEMU here.
                let client = try await runtime.connectQMP(timeout: .seconds(10))
                defer { client.close() }
                status = try await client.queryStatus()
            }
            // The supervisor wrote the record (pids, start times) once QEMU ran: read it now.
            spec.record = (try? runtime.records.reload()) ?? spec.record
            return UpResult(record: spec.record, status: status, runtime: runtime, ownership: options.owned ? ownership : nil)
        }
        // The supervisor failed, hung or died before QEMU answered: whatever
        // it started must not outlive this failed `up`.
        if await supervisor.wait(timeout: .seconds(10)) == nil {
            // Our unreaped child: its pid cannot have been reused. Reaped off the pool.
            _ = await supervisor.killAndReap()
        }
        let stray = await killLaunchingQEMU(runtime)
        runtime.removeRAMFiles(path: spec.record.revert?.ramDirectory)
        lock.removeFile()
        if let exit = runtime.exitRecord, exit.at >= spec.record.startedAt {
            throw LabError.launchFailed(lab: lab.name, exit: exit.exitDescription, qemuOutput: exit.qemuOutput, diagnoses: withHostFacts(exit.diagnoses))
        }
        let log = Supervisor.readLog(runtime.supervisorLogPath, from: 0)
        runtime.removeRuntimeFiles()
        let killed = stray.map { "; its QEMU (pid \($0)) was killed" } ?? ""
        throw LabError.supervisor("the supervisor ended before QEMU answered (\(message.isEmpty ? "no message" : message))\(killed); its log: \(log)")
    }

    /// Who has lab `name` while its QEMU runs: its owning command (a `qlab run`),
    /// else the `qlab up` that started it; nil when it is not running.
    public func labHolder(_ name: String) throws -> String? {
        let runtime = self.runtime(name)
        // Another process writes the record: read it again.
        guard let record = try runtime.records.reload(), runtime.liveQEMU(record) != nil else { return nil }
        if let owner = record.owner, owner.isAlive { return owner.description }
        return "qlab up (QEMU pid \(record.qemuPID), supervisor pid \(record.supervisorPID), since \(formatTimestamp(record.startedAt)))"
    }

    /// Returns once lab `name` is not running. Without `wait` a running lab is
    /// ``LabError/labInUse(lab:by:)`` (exit 4) naming who has it; with it, this
    /// waits (telling `onWait` who has it, once, then on each change) up to the
    /// duration, then ``LabError/waitTimedOut(what:holder:seconds:)`` (exit 124).
    public func waitForLab(_ name: String, wait: WaitPolicy, onWait: @Sendable (String) -> Void = { _ in }) async throws {
        let start = ContinuousClock.now
        var told: String?
        while let holder = try labHolder(name) {
            switch wait {
            case .no: throw LabError.labInUse(lab: name, by: holder)
            case .upTo(let limit):
                if let limit, ContinuousClock.now - start >= limit {
                    throw LabError.waitTimedOut(what: "lab \(name)", holder: holder, seconds: Double(limit.components.seconds))
                }
                if told != holder {
                    onWait("waiting for lab \(name): in use by \(holder)")
                    told = holder
                }
            }
            // A lab ends by its QEMU's exit, which this process cannot wait on: look again shortly.
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Reserves the host cards a launch of `lab` passes through (none: nil).
    func reserveCards(lab: Lab, options: UpOptions) async throws -> CardReservation? {
        try await CardReservation.take(
            cards: planner.reservedCards(of: lab, leftOutDevices: options.leftOutDevices), lab: lab.name, roots: hostRoots,
            environment: environment, wait: options.wait, onWait: options.onWait)
    }

    /// The program `up` starts as a lab's supervisor: `qlab-supervisor` in the
    /// directory of the qlab executable `qlab` when it is there (a small
    /// process without Foundation), else `qlab` itself (`qlab _supervise`).
    public static func supervisorProgram(qlab: String) -> String {
        let candidate = Paths.directory(of: qlab) + "/qlab-supervisor"
        guard qlab.contains("/"), FileStatus.following(candidate)?.kind == .regular, FileSystem.isExecutable(candidate) else { return qlab }
        return candidate
    }

    /// Kills the QEMU of a launch whose supervisor is gone before QEMU
    /// answered: found by the record the supervisor wrote right after
    /// starting it (pid and start time), else by QEMU's pid file, and only
    /// while its command line names this lab's QMP socket. Returns its pid.
    func killLaunchingQEMU(_ runtime: LabRuntime) async -> Int32? {
        var pid: Int32?
        // Written by the supervisor (another process) once QEMU started.
        if let record = (try? runtime.records.reload()) ?? nil { pid = runtime.liveQEMU(record) }
        guard let pid = pid ?? Self.qemuByPIDFile(runtime) else { return nil }
        ProcessTable.send(.kill, to: pid)
        _ = await ProcessTable.waitGone(pid, timeout: .seconds(10))
        return pid
    }

    /// The lab's QEMU as its pid file names it, while that pid runs and its
    /// command line names this lab's QMP socket (no record needed: for a
    /// launch that had not written one, or a record that does not decode).
    static func qemuByPIDFile(_ runtime: LabRuntime) -> Int32? {
        guard let text = HostFiles.readText(runtime.pidFilePath), let filed = Int32(text.trimmingSpaces()),
            ProcessTable.isRunning(filed), ProcessTable.commandLine(filed).contains(where: { $0.contains(runtime.qmpSocketPath) })
        else { return nil }
        return filed
    }

    /// The launch was cancelled before the supervisor said ready: let go of
    /// the owner pipe (the supervisor kills QEMU and cleans up), wait for
    /// the supervisor, and make sure of it; no runtime dir or lock file stays.
    func abandonLaunch(supervisor: ChildProcess, ownership: LabOwnership, runtime: LabRuntime, lock: FileLock) async {
        ownership.release()
        await shielded {
            // The supervisor is our child until reaped here: its pid is ours to signal.
            if await supervisor.wait(timeout: .seconds(15)) == nil {
                _ = await supervisor.killAndReap()
            }
            _ = await self.killLaunchingQEMU(runtime)
        }
        runtime.removeRAMFiles()
        runtime.removeRuntimeFiles()
        lock.removeFile()
    }

    /// `qlab up --foreground`: supervises in this process until QEMU ends.
    /// Cancelling the task takes QEMU down (quit, then SIGTERM, then SIGKILL);
    /// a second request of `stop` kills it at once. `onReady` runs once QMP answers.
    /// Throws `CancellationError` when cancelled before QEMU was ready.
    /// When it returns or throws, no QEMU, runtime dir or lock file is left.
    public func upForeground(
        labFile: String, options: UpOptions, stop: StopRequest? = nil, onReady: @Sendable (LabRecord) -> Void
    ) async throws -> ExitRecord {
        // The lock is dropped once prepared: other commands work on the lab while it runs.
        let lab = try Lab.load(path: labFile)
        // Held by this process, which supervises the lab until it ends.
        var reservation = options.reservation
        if reservation == nil { reservation = try await reserveCards(lab: lab, options: options) }
        defer { withExtendedLifetime(reservation) {} }
        let (spec, _) = try await prepareLaunch(lab: lab, options: options, foreground: true)
        let runtime = self.runtime(lab.name)
        let supervisor = Supervisor(spec: spec, cardFDs: reservation?.descriptors ?? [])
        let (readiness, child, client) = await supervisor.launch()
        switch readiness {
        case .failed(let exit):
            await shielded {
                if let lock = try? await runtime.takeLock(timeout: .seconds(1)) { abandon(runtime, lock) }
            }
            if Task.isCancelled { throw CancellationError() }
            throw LabError.launchFailed(lab: lab.name, exit: exit.exitDescription, qemuOutput: exit.qemuOutput, diagnoses: withHostFacts(exit.diagnoses))
        case .ready:
            // The supervisor (here, with its own store) wrote the record once QEMU ran.
            onReady((try? runtime.records.reload()) ?? spec.record)
            let (child, client) = (child!, client!)
            stop?.onRequest { count in
                // The QEMU running now (a fast revert replaces it), this process's unreaped child.
                if count > 1 { supervisor.killCurrentQEMU() }
            }
            let exit = await withTaskCancellationHandler {
                await shielded { await supervisor.watch(child: child, client: client) }
            } onCancel: {
                Task.detached { await supervisor.stop(child: child, client: client, urgent: stop?.isUrgent ?? false) }
            }
            await shielded {
                if let lock = try? await runtime.takeLock(timeout: .seconds(2)) { abandon(runtime, lock) }
            }
            return exit
        }
    }

    /// Everything before QEMU starts, under the lab's lock (returned held):
    /// load and check the lab, plan, refuse what must not start, make the
    /// directories, overlays and launch spec. On failure nothing is left.
    func prepareLaunch(lab: Lab, options: UpOptions, foreground: Bool) async throws -> (LaunchSpec, FileLock) {
        try lab.checkFiles(guest: try lab.selectGuest(options.guest).name)
        let runtime = self.runtime(lab.name)
        let lock = try await runtime.takeLock()
        do {
            var (spec, plan) = try plan(lab: lab, options: options)
            spec.record.foreground = foreground
            try checkCanStart(lab: lab, spec: spec, force: options.force)
            try runtime.makeDirectories()
            if let ram = spec.record.revert?.ramDirectory {
                // A fresh RAM directory: RAM files of an earlier run (one that crashed) are stale.
                runtime.removeRAMFiles(path: ram)
                _ = try runtime.ramDirectory(path: ram, create: true)
            }
            try runtime.writeLastLabFile(lab.file)
            if let source = options.cloneOf {
                let sourceLayout = QEMURuntime.standard(
                    lab: source, guest: plan.guest, runtimeDirectory: runtime.runtimeRoot, stateDirectory: runtime.stateRoot,
                    accel: plan.layout.accel, overlays: .testRun)
                try await copyOverlays(from: sourceLayout, to: plan.layout)
            } else {
                try await makeOverlays(lab: lab, guest: plan.guest, layout: plan.layout, fresh: options.freshDisk || options.overlays == .testRun)
            }
            try runtime.writeLaunchSpec(spec)
            return (spec, lock)
        } catch {
            abandon(runtime, lock)
            throw error
        }
    }

    /// A launch that stopped before QEMU ran leaves nothing behind: no
    /// runtime dir, no lock file (unless the lab is running already).
    func abandon(_ runtime: LabRuntime, _ lock: FileLock) {
        // A supervisor may have written the record since this runtime's store read it.
        let record = try? runtime.records.reload()
        if let record, runtime.liveQEMU(record) != nil || runtime.liveSupervisor(record) != nil { return }
        runtime.removeRAMFiles(path: record?.revert?.ramDirectory)
        runtime.removeRuntimeFiles()
        lock.removeFile()
    }

    /// QEMU's text names the card but not a better slot: for an INTx-busy
    /// failure, the doctor's `intx-shared` check on this host adds which
    /// handlers hold the line and which bridge slots reach another one.
    public func withHostFacts(_ diagnoses: [Diagnosis]) -> [Diagnosis] {
        diagnoses.map { diagnosis in
            guard diagnosis.id == "vfio-intx-busy", let device = diagnosis.device, let address = PCIAddress(device) else { return diagnosis }
            let report = HostDoctor(roots: hostRoots).run(devices: [.address(address)], guestMemory: nil)
            guard let check = report.device(address.description)?.check("intx-shared"), check.status == .fail else { return diagnosis }
            var enriched = diagnosis
            enriched.fix += "\nOn this host: \(check.detail) \(check.hint)"
            return enriched
        }
    }

    func checkCanStart(lab: Lab, spec: LaunchSpec, force: Bool) throws {
        try checkMemory(lab: lab, guest: try lab.selectGuest(spec.record.guest))
        let runtime = self.runtime(lab.name)
        if let record = try runtime.record {
            if let pid = runtime.liveQEMU(record) {
                throw LabError.alreadyRunning(lab: lab.name, pid: pid, supervisorPID: runtime.liveSupervisor(record), since: record.startedAt)
            }
            if let supervisor = runtime.liveSupervisor(record), supervisor != ThisProcess.id {
                throw LabError.alreadyRunning(lab: lab.name, pid: nil, supervisorPID: supervisor, since: record.startedAt)
            }
            runtime.removeRuntimeFiles()
        }
        // Another lab's record that does not decode is an error only where it matters: a host card to share.
        for other in try LabRuntime.all(environment: environment) where other.name != lab.name && !spec.record.passthroughHosts.isEmpty {
            guard let record = try other.record, other.liveQEMU(record) != nil else { continue }
            for planned in spec.record.passthroughHosts {
                if record.passthroughHosts.contains(where: { $0.host == planned.host }) {
                    throw LabError.deviceInUse(device: planned.device, host: planned.host, otherLab: other.name)
                }
            }
        }
        if !force {
            let report = HostDoctor.preflight(lab: lab, guest: try lab.selectGuest(spec.record.guest), roots: hostRoots)
            if !report.ok { throw LabError.preflightFailed(lab: lab.name, problems: report.text(onlyProblems: true)) }
        }
    }

    /// Guest memory the host cannot ever give (more than RAM + swap in the
    /// procfs's meminfo) is refused before QEMU starts, naming the field.
    func checkMemory(lab: Lab, guest: LabGuest) throws(LabFileError) {
        let memory = lab.machineSettings(for: guest).memory
        guard let ceiling = Procfs(roots: hostRoots).memoryCeiling(), memory.bytes > ceiling else { return }
        let field = guest.machine.memory != nil ? "guests.\(guest.name).machine.memory"
            : lab.machine.memory != nil ? "machine.memory" : "guests.\(guest.name).os (its profile's default memory)"
        throw LabFileError(
            file: lab.file, keyPath: field,
            message: "\(memory) is more than this host can ever give (RAM + swap: \(ByteSize(bytes: ceiling & ~((1 << 20) - 1)))); give less memory")
    }

    /// The guest disk overlay (kept across `up`s unless `fresh`: snapshots
    /// live in it) and the firmware variable store.
    func makeOverlays(lab: Lab, guest: LabGuest, layout qemuRuntime: QEMURuntime, fresh: Bool) async throws {
        // QEMU creates the console log but not its directory (a guest with no disk has no overlay to make it).
        if let log = qemuRuntime.serialLog { try FileSystem.makeDirectory(Paths.directory(of: log), mode: 0o700) }
        if let overlay = qemuRuntime.diskOverlay, let base = guest.disk {
            try FileSystem.makeDirectory(Paths.directory(of: overlay), mode: 0o700)
            if fresh || !FileSystem.entryExists(overlay) {
                try await DiskOverlay.createKept(overlay: overlay, base: base, baseFormat: guest.diskFormat)
            } else {
                try DiskOverlay.checkBase(overlay: overlay, base: base, baseFormat: guest.diskFormat)
            }
        }
        for (id, overlay) in qemuRuntime.deviceDiskOverlays {
            guard let disk = lab.devices.compactMap(\.emulated).flatMap(\.disks).first(where: { $0.id == id }) else { continue }
            try FileSystem.makeDirectory(Paths.directory(of: overlay), mode: 0o700)
            try await DiskOverlay.create(overlay: overlay, base: disk.image, baseFormat: disk.format)
        }
        if let vars = qemuRuntime.firmwareVars, fresh || !FileSystem.entryExists(vars) {
            try FileSystem.makeDirectory(Paths.directory(of: vars), mode: 0o700)
            try await FirmwareVariables.create(at: vars)
        }
    }

    /// A clone's overlays: byte copies of the source lab's guest disk overlay,
    /// boot-attached device disk overlays and UEFI variable store (each holds
    /// the ready snapshot's internal snapshot; their backing files are the
    /// same read-only bases). Each is written under a temporary name and
    /// renamed, so no half-copied overlay is ever used.
    func copyOverlays(from source: QEMURuntime, to target: QEMURuntime) async throws {
        if let log = target.serialLog { try FileSystem.makeDirectory(Paths.directory(of: log), mode: 0o700) }
        var pairs: [(String, String)] = []
        if let from = source.diskOverlay, let to = target.diskOverlay { pairs.append((from, to)) }
        for (id, to) in target.deviceDiskOverlays { if let from = source.deviceDiskOverlays[id] { pairs.append((from, to)) } }
        if let from = source.firmwareVars, let to = target.firmwareVars { pairs.append((from, to)) }
        for (from, to) in pairs {
            guard FileSystem.entryExists(from) else { throw LabError.system("\(from) is missing: the lab to clone has no run overlay") }
            try FileSystem.makeDirectory(Paths.directory(of: to), mode: 0o700)
            FileSystem.remove(to)
            try await DiskOverlay.atomically(to) { (temporary) throws(ImageToolError) in
                try FreshOverlay.copyFile(from, to: temporary)
            }
        }
    }

    /// Reads one line from `fd`, waiting at most `timeout`; "" on EOF, timeout
    /// or cancellation. The wait is `poll(2)` on `fd` and a cancel pipe on a
    /// detached thread, so no cooperative-pool thread is held for up to 90 s.
    static func readLine(_ fd: Int32, timeout: Duration) async -> String {
        let deadline = ContinuousClock.now + timeout
        let line = try? await OffPoolWait.run { cancelFD -> String in
            var collected: [UInt8] = []
            let input = FileDescriptor(rawValue: fd)
            var fds = PollSet([(input, .readable), (FileDescriptor(rawValue: cancelFD), .readable)])
            while ContinuousClock.now < deadline {
                guard case .success = fds.wait(until: deadline) else { break }
                if !fds.returned(1).isEmpty { break }
                if fds.returned(0).isEmpty { continue }
                var byte: UInt8 = 0
                guard case .success(1) = withUnsafeMutableBytes(of: &byte, { input.readSome(into: $0) }) else { break }
                if byte == 0x0A { break }
                collected.append(byte)
            }
            return String(decoding: collected, as: UTF8.self)
        }
        return line ?? ""
    }

    // MARK: down

    public enum DownOutcome: Sendable, Equatable {
        case notRunning
        /// QEMU was gone already; leftovers were cleaned up.
        case cleanedUp
        case stopped(method: String)
        /// The record did not decode (`problem` names the file and field): QEMU,
        /// found by its pid file, was stopped (`method`; nil when none ran); then the files went.
        case unreadableRecord(problem: String, method: String?)
    }

    /// `qlab down`: quit over QMP, then SIGTERM, then SIGKILL, each with a
    /// bounded wait; reaped by the supervisor (or waited for by pid when the
    /// supervisor is gone); sockets and record removed. Idempotent.
    /// Once `stop` is urgent (a second Ctrl-C), the graceful steps are skipped: SIGKILL.
    ///
    /// A lab that belongs to a running command (a `qlab run`) is refused
    /// (``LabError/owned(lab:owner:)``), unless `force`: then the owner is
    /// asked to stop (SIGTERM, as a user's Ctrl-C: it ends its run as cancelled
    /// and takes the lab down itself) and waited for, `stoppingOwner` told first.
    public func down(
        _ name: String, stop: StopRequest? = nil, force: Bool = false, stoppingOwner: @Sendable (LabOwner) -> Void = { _ in }
    ) async throws -> DownOutcome {
        let urgent: @Sendable () -> Bool = { stop?.isUrgent ?? false }
        let runtime = self.runtime(name)
        // A lab with no runtime dir is not running: nothing is made or changed
        // (no directory), and a directory that fails the checks stops here,
        // before any record in it is read. A lock file left by a lab that went
        // down by itself goes (when no one holds it: its release removes it).
        guard try runtime.runtimeDirectory(create: false) != nil else {
            try runtime.checkDirectories()
            if FileSystem.entryExists(runtime.lockPath) { _ = try? await runtime.takeLock(timeout: .zero, checkingOwner: false) }
            return .notRunning
        }
        var ownerStopped = false
        if force, let owner = runtime.liveOwner() {
            stoppingOwner(owner)
            try await stopOwner(owner, of: name, urgent: urgent)
            ownerStopped = true
        }
        // The owner took its lab down as it ended: that is how it went down.
        if ownerStopped, try runtime.runtimeDirectory(create: false) == nil {
            if FileSystem.entryExists(runtime.lockPath) { _ = try? await runtime.takeLock(timeout: .zero, checkingOwner: false) }
            return .stopped(method: "owner")
        }
        // Released with the lab down, the lock takes its file with it (``LabRuntime/takeLock``).
        let lock = try await runtime.takeLock()
        defer { withExtendedLifetime(lock) {} }
        let read: LabRecord?
        do {
            read = try runtime.record
        } catch {
            return await downUnreadable(runtime, problem: error, urgent: urgent)
        }
        guard let record = read else {
            let leftovers = FileSystem.entryExists(runtime.directory)
            runtime.removeRuntimeFiles()
            runtime.removeRAMFiles()
            return leftovers ? .cleanedUp : .notRunning
        }
        // Only processes that still have the start times recorded at launch
        // are signalled: a reused pid belongs to someone else.
        let supervisorAlive = runtime.liveSupervisor(record) != nil
        guard let pid = runtime.liveQEMU(record) else {
            if supervisorAlive { _ = await ProcessTable.waitGone(record.supervisorPID, timeout: .seconds(10)) }
            if runtime.exitRecord.map({ $0.at < record.startedAt }) ?? true {
                let output = Supervisor.readLog(runtime.qemuLogPath, from: record.qemuLogOffset)
                let exit = ExitRecord(exit: nil, at: wallClockSeconds(), requested: false, qemuOutput: output, diagnoses: Diagnoser.diagnose(output))
                try? runtime.writeExitRecord(exit)
            }
            runtime.removeRuntimeFiles()
            runtime.removeRAMFiles(path: record.revert?.ramDirectory)
            return .cleanedUp
        }
        // Snapshot RAM images and the live RAM file go with the lab.
        defer { runtime.removeRAMFiles(path: record.revert?.ramDirectory) }
        let method = await stopQEMU(pid, of: runtime, urgent: urgent) { runtime.liveQEMU(record) != nil }
        if supervisorAlive {
            // It reaps QEMU, writes the exit record and removes the runtime files.
            if !(await ProcessTable.waitGone(record.supervisorPID, timeout: .seconds(10))), runtime.liveSupervisor(record) != nil {
                ProcessTable.send(.kill, to: record.supervisorPID)
            }
        } else {
            let exit = ExitRecord(exit: nil, at: wallClockSeconds(), requested: true,
                                  qemuOutput: Supervisor.readLog(runtime.qemuLogPath, from: record.qemuLogOffset), diagnoses: [])
            try? runtime.writeExitRecord(exit)
        }
        runtime.removeRuntimeFiles()
        return .stopped(method: method)
    }

    /// Quit over QMP, then SIGTERM, then SIGKILL, each with a bounded wait;
    /// a signal only while `stillOurs` (the pid still has the start time and
    /// command line qlab knows it by). Returns the step that ended QEMU.
    func stopQEMU(_ pid: Int32, of runtime: LabRuntime, urgent: @escaping @Sendable () -> Bool, stillOurs: () -> Bool) async -> String {
        try? runtime.requestStop()
        var method = "quit"
        if !urgent(), let client = try? await runtime.connectQMP(timeout: .seconds(3)) {
            _ = try? await client.execute("quit", timeout: .seconds(5))
            client.close()
        }
        if !(await ProcessTable.waitGone(pid, timeout: .seconds(10), unless: urgent)) {
            method = "SIGTERM"
            if !urgent(), stillOurs() { ProcessTable.send(.terminate, to: pid) }
            if !(await ProcessTable.waitGone(pid, timeout: .seconds(5), unless: urgent)) {
                method = "SIGKILL"
                if stillOurs() { ProcessTable.send(.kill, to: pid) }
                _ = await ProcessTable.waitGone(pid, timeout: .seconds(5))
            }
        }
        return method
    }

    /// `down` of a lab whose record does not decode (a newer qlab wrote it, a
    /// full disk cut it short): QEMU may well run, so it is found without the
    /// record (pid file and command line, as ``killLaunchingQEMU(_:)``), stopped,
    /// its supervisor (QEMU's parent, a qlab supervising this lab) waited for;
    /// only then are the runtime files and RAM files removed.
    func downUnreadable(_ runtime: LabRuntime, problem: any Error, urgent: @escaping @Sendable () -> Bool) async -> DownOutcome {
        var method: String?
        if let pid = Self.qemuByPIDFile(runtime), let startTime = ProcessIdentity.startTime(pid) {
            let parent = ProcessIdentity.parent(pid)
            let supervisor = parent.flatMap { parent -> (Int32, UInt64)? in
                let argv = ProcessTable.commandLine(parent)
                guard argv.contains("--foreground") || argv.contains(runtime.launchSpecPath), let start = ProcessIdentity.startTime(parent) else { return nil }
                return (parent, start)
            }
            method = await stopQEMU(pid, of: runtime, urgent: urgent) {
                ProcessIdentity.matches(pid, startTime: startTime) && ProcessTable.commandLine(pid).contains(where: { $0.contains(runtime.qmpSocketPath) })
            }
            // The supervisor reaps QEMU, writes the exit record and removes the runtime files.
            if let (pid, start) = supervisor, !(await ProcessTable.waitGone(pid, timeout: .seconds(10))), ProcessIdentity.matches(pid, startTime: start) {
                ProcessTable.send(.kill, to: pid)
            }
        }
        runtime.removeRuntimeFiles()
        runtime.removeRAMFiles()
        return .unreadableRecord(problem: "\(problem)", method: method)
    }

    /// `down --force` of a lab a running command owns: SIGTERM to the owner
    /// (verified by pid and start time), which ends its run as cancelled and
    /// takes the lab down; a second SIGTERM hurries it (SIGKILL of QEMU).
    func stopOwner(_ owner: LabOwner, of lab: String, urgent: @escaping @Sendable () -> Bool) async throws {
        let patience: (first: Duration, second: Duration) = (.seconds(60), .seconds(30))
        if owner.isAlive { ProcessTable.send(.terminate, to: owner.pid) }
        if await ProcessTable.waitGone(owner.pid, timeout: patience.first, unless: urgent) { return }
        if owner.isAlive { ProcessTable.send(.terminate, to: owner.pid) }
        if await ProcessTable.waitGone(owner.pid, timeout: patience.second) { return }
        guard owner.isAlive else { return }
        throw LabError.ownerDidNotStop(lab: lab, owner: owner, seconds: Int((patience.first + patience.second).components.seconds))
    }

    // MARK: status

    public enum State: String, Sendable {
        case running, paused, stopped, crashed
        /// The record does not decode: qlab cannot say (``Status/problem`` says why).
        case unreadable
    }

    public struct Status: Sendable {
        public var name: String
        public var state: State
        /// QEMU's own run state (running, paused, prelaunch, shutdown, ...), when asked.
        public var vmStatus: String?
        public var record: LabRecord?
        public var supervised: Bool
        public var uptime: Double?
        public var lastExit: ExitRecord?
        /// For an ``State/unreadable`` record: what is wrong with it (file and field).
        public var problem: String?

        public var json: JSONValue {
            var object: JSONObject = ["name": .string(name), "state": .string(state.rawValue)]
            object["vm_status"] = vmStatus.map(JSONValue.string) ?? .null
            if let record {
                for (key, value) in record.upJSON where key != "name" { object[key] = value }
            }
            object["supervised"] = .bool(supervised)
            object["uptime_seconds"] = .seconds(uptime)
            object["last_exit"] = lastExit?.outputJSON ?? .null
            object["problem"] = problem.map(JSONValue.string) ?? .null
            return .object(object)
        }
    }

    /// Throws ``UnsafeDirectoryError`` when the lab's directories fail the checks (nothing in them is trusted).
    public func status(_ name: String) async throws -> Status {
        let runtime = self.runtime(name)
        try runtime.checkDirectories()
        let lastExit = runtime.exitRecord
        let read: LabRecord?
        do {
            read = try runtime.record
        } catch {
            // Never "stopped": its QEMU may run. `down` still stops it.
            return Status(name: name, state: .unreadable, vmStatus: nil, record: nil, supervised: false, uptime: nil, lastExit: nil, problem: "\(error)")
        }
        guard let record = read, runtime.liveQEMU(record) != nil else {
            let crashed = lastExit?.crashed ?? false
            return Status(name: name, state: crashed ? .crashed : .stopped, vmStatus: nil, record: nil, supervised: false, uptime: nil, lastExit: lastExit)
        }
        var vmStatus: String?
        if let client = try? await runtime.connectQMP(timeout: .seconds(3)) {
            vmStatus = try? await client.queryStatus().status
            client.close()
        }
        let state: State
        switch vmStatus {
        case "running"?: state = .running
        case "internal-error"?, "guest-panicked"?, "io-error"?: state = .crashed
        case nil: state = .running
        default: state = .paused
        }
        // A running lab's last exit belongs to an earlier run: not shown.
        return Status(
            name: name, state: state, vmStatus: vmStatus, record: record,
            supervised: runtime.liveSupervisor(record) != nil, uptime: wallClockSeconds() - record.startedAt,
            lastExit: nil)
    }

    /// Every lab with runtime files or state, by name. A lock file no process
    /// holds of a lab with no runtime dir (its last holder was killed) goes first.
    public func list() async throws -> [Status] {
        await LabRuntime.removeUnheldLockFiles(environment: environment)
        var result: [Status] = []
        for name in try LabRuntime.knownNames(environment: environment) { result.append(try await status(name)) }
        return result
    }
}
