import Logging
import Platform
import QMP
import Synchronization

/// The small process that owns a lab's QEMU: it starts QEMU, holds the
/// second QMP monitor, appends every event with a timestamp to the event
/// log, keeps QEMU's stderr in a log, and records how QEMU ended.
///
/// QEMU is its child, so `waitpid` gives the real exit code or signal.
/// If the supervisor itself is killed once QEMU answered, QEMU keeps running
/// and `status` and `down` still find it by the record's pid and start time.
///
/// `up` hands it the read end of an owner pipe (``LabOwnership``): when the
/// owner goes away during the launch, QEMU is killed and nothing is left;
/// for a lab that belongs to its owner (`ownedForLife`: `qlab run`), the
/// same holds for the lab's whole life, and QEMU is taken down.
public final class Supervisor: Sendable {
    public let spec: LaunchSpec
    public var runtime: LabRuntime { spec.runtime }
    let owner: OwnerWatch?
    /// The lab's card locks (``CardLock``): QEMU inherits them, so a card stays reserved while the QEMU that has it runs.
    let cardFDs: [Int32]
    let ownedForLife: Bool
    /// The QEMU being watched and its monitor (a fast revert replaces them); nil once reaped.
    let current = Mutex<(child: ChildProcess, client: QMPClient)?>(nil)
    /// Reaping QEMUs that quit for fast reverts (``retire(_:)``).
    let retiring = Mutex<[Task<Void, Never>]>([])

    /// `ownerFD`: the owner pipe's read end, if any.
    public init(spec: LaunchSpec, ownerFD: Int32? = nil, ownedForLife: Bool = false, cardFDs: [Int32] = []) {
        self.spec = spec
        self.cardFDs = cardFDs
        self.owner = ownerFD.map(OwnerWatch.init(fd:))
        self.ownedForLife = ownedForLife && ownerFD != nil
    }

    /// True when the launch must stop: the owner went away, or (in
    /// `up --foreground`, where this runs in the command) the task was cancelled.
    var launchAbandoned: Bool { owner?.ownerGone == true || Task.isCancelled }

    /// How the launch went, reported to `up` through the ready pipe.
    public enum Readiness: Sendable {
        case ready(qemuPID: Int32)
        case failed(ExitRecord)
    }

    /// Starts QEMU and waits until its supervisor monitor answers or it exits.
    /// On failure the exit record is written and runtime files removed.
    public func launch(readyTimeout: Duration = .seconds(60)) async -> (Readiness, ChildProcess?, QMPClient?) {
        // The lab-wide trace (`trace_qmp: true`): what the supervisor's monitor sees, every event included.
        let labTracer: (any QMPTracer)? = spec.traceQMP ? runtime.labTracer(client: "qlab-supervisor") : nil
        let logOffset = FileSystem.size(runtime.qemuLogPath) ?? 0
        // QEMU is given paths in these directories: they must pass the checks.
        let stateDirectory: PrivateDirectory
        do {
            guard try runtime.runtimeDirectory(create: false) != nil, let state = try runtime.labStateDirectory(create: false) else {
                throw LabError.supervisor("the lab's runtime or state directory is missing")
            }
            stateDirectory = state
        } catch {
            let record = ExitRecord(exit: nil, at: wallClockSeconds(), requested: false, qemuOutput: "qlab did not start QEMU: \(error)", diagnoses: [])
            finish(record)
            return (.failed(record), nil, nil)
        }
        try? stateDirectory.appendLine(
            Paths.baseName(runtime.qemuLogPath), "=== qlab: starting QEMU for lab \(spec.record.name) at \(formatTimestamp(wallClockSeconds())) ===")
        let startOffset = FileSystem.size(runtime.qemuLogPath) ?? logOffset
        // QEMU creates its sockets with the umask: 0600 sockets and logs.
        // (qlab's own directories get explicit modes.)
        ThisProcess.setUmask(0o177)
        if launchAbandoned {
            let record = ExitRecord(exit: nil, at: wallClockSeconds(), requested: true, qemuOutput: "qlab: the launch was abandoned before QEMU started", diagnoses: [])
            finish(record)
            await removeLockFileIfOwnerGone()
            return (.failed(record), nil, nil)
        }
        let child: ChildProcess
        do {
            // The guest's RAM file, its blocks allocated before QEMU maps it.
            if let revert = spec.record.revert, revert.method == .fast,
                let directory = try runtime.ramDirectory(path: revert.ramDirectory, create: false),
                let note = try RAMImage.allocateLiveFile(in: directory, memoryMiB: revert.memoryMiB)
            {
                try? stateDirectory.appendLine(Paths.baseName(runtime.qemuLogPath), "=== qlab: \(note) ===")
            }
        } catch {
            let record = ExitRecord(exit: nil, at: wallClockSeconds(), requested: false, qemuOutput: "qlab did not start QEMU: \(error)", diagnoses: [])
            finish(record)
            return (.failed(record), nil, nil)
        }
        do {
            let log = try stateDirectory.openForAppending(Paths.baseName(runtime.qemuLogPath))
            defer { FileDescriptor(rawValue: log).closeIgnoringErrors() }
            child = try ChildProcess.spawn(
                executable: spec.argv[0], arguments: Array(spec.argv.dropFirst()), stdin: .null,
                stdout: .descriptor(log), stderr: .descriptor(log), keepDescriptors: cardFDs)
        } catch {
            let record = ExitRecord(
                exit: nil, at: wallClockSeconds(), requested: false,
                qemuOutput: "qlab could not start QEMU: \(error); install qemu-system-x86 or set `qemu:` in the lab file", diagnoses: [])
            finish(record)
            return (.failed(record), nil, nil)
        }
        var record = spec.record
        record.qemuPID = child.pid
        record.supervisorPID = ThisProcess.id
        record.qemuStartTime = ProcessIdentity.startTime(child.pid)
        record.supervisorStartTime = ProcessIdentity.startTime(ThisProcess.id)
        record.qemuLogOffset = startOffset
        try? runtime.writeRecord(record)

        // QEMU creates the monitor socket while it parses the command line;
        // until it answers, an early exit is a launch failure. Each turn waits
        // for an event: an entry in the runtime dir (inotify), QEMU's exit (its
        // pidfd), the owner going away (its pipe hangs up) or cancellation.
        let deadline = ContinuousClock.now + readyTimeout
        let watch = try? DirectoryWatch()
        let watching = watch?.add(runtime.directory) ?? false
        let exitEvent = ProcessDescriptor.open(child.pid)
        defer { if exitEvent >= 0 { FileDescriptor(rawValue: exitEvent).closeIgnoringErrors() } }
        let events = [exitEvent >= 0 ? FileDescriptor(rawValue: exitEvent) : nil, owner.map { FileDescriptor(rawValue: $0.fd) }].compactMap { $0 }
        while ContinuousClock.now < deadline {
            if launchAbandoned {
                // QEMU is our unreaped child: its pid is ours to signal.
                var exitRecord = makeExitRecord(await child.killAndReap(), requested: true, logOffset: startOffset)
                exitRecord.qemuOutput += "\nqlab: the launch was abandoned (its owner went away or it was cancelled); QEMU was killed."
                finish(exitRecord)
                await removeLockFileIfOwnerGone()
                return (.failed(exitRecord), nil, nil)
            }
            if let exit = child.poll() {
                let exitRecord = makeExitRecord(exit, requested: false, logOffset: startOffset)
                finish(exitRecord)
                return (.failed(exitRecord), nil, nil)
            }
            let socketThere = FileSystem.entryExists(runtime.supervisorSocketPath)
            if socketThere, let client = try? await QMPClient.connect(path: runtime.supervisorSocketPath, timeout: .seconds(10), tracer: labTracer) {
                LabSupervisionLog.logger.info("QEMU ready", metadata: ["lab": "\(spec.record.name)", "qemu_pid": "\(child.pid)"])
                return (.ready(qemuPID: child.pid), child, client)
            }
            let left = deadline - ContinuousClock.now
            if let watch, watching, exitEvent >= 0, !socketThere {
                // One off-pool wait until the socket is there (or QEMU exits, the owner goes, time is up).
                let socket = runtime.supervisorSocketPath
                _ = await watch.wait(until: { FileSystem.entryExists(socket) }, timeout: left, orReadable: events)
            } else {
                // The socket is there but QEMU is not listening yet (bound, not
                // yet listening: no further event comes), or no inotify or pidfd
                // could be had: a short retry.
                try? await Task.sleep(for: min(left, .milliseconds(5)))
            }
        }
        let exit = await child.killAndReap()
        var exitRecord = makeExitRecord(exit, requested: false, logOffset: startOffset)
        exitRecord.qemuOutput += "\nqlab: QEMU's monitor did not answer within \(readyTimeout); QEMU was killed."
        finish(exitRecord)
        return (.failed(exitRecord), nil, nil)
    }

    /// Logs events until QEMU exits; then records the exit and cleans up.
    /// Meanwhile it serves the control socket (``ControlServer``): a `revert`
    /// request replaces QEMU by a fresh one on the snapshot's RAM image
    /// (``replaceQEMU(child:client:tag:)``), and watching goes on with it.
    /// Returns the exit record of the QEMU that ended the lab.
    public func watch(child: ChildProcess, client: QMPClient) async -> ExitRecord {
        var child = child
        var client = client
        current.withLock { $0 = (child, client) }
        let control = spec.record.revert?.method == .fast ? try? ControlServer.start(path: runtime.controlSocketPath) : nil
        defer { control?.close() }
        while true {
            let logger = startEventLogger(client)
            watching: while true {
                switch await watchQEMU(child: child, client: client, control: control) {
                case .exited(let exit):
                    client.close()
                    _ = await logger.value
                    let requested = runtime.stopRequested
                        || client.eventHistory.contains { $0.name == "SHUTDOWN" && ["host-qmp-quit", "host-signal"].contains($0.data["reason"]?.stringValue ?? "") }
                    let record = makeExitRecord(exit, requested: requested, logOffset: ((try? runtime.record) ?? nil)?.qemuLogOffset ?? spec.record.qemuLogOffset)
                    LabSupervisionLog.logger.info("QEMU \(record.exitDescription)", metadata: ["lab": "\(spec.record.name)", "requested": "\(requested)"])
                    current.withLock { $0 = nil }
                    // No QEMU of this lab outlives its supervisor: QEMUs that quit for reverts are reaped first.
                    await reapRetired()
                    finish(record)
                    // An owner still alive that holds the lock removes the file at its release (the runtime dir is gone).
                    await removeLockFileIfUnheld()
                    return record
                case .request(let request):
                    // Requests are served one at a time: the answer to `settle` says no revert is under way.
                    if request.command == "settle" {
                        request.respond(["return": [:]])
                        continue watching
                    }
                    guard request.command == "revert", let tag = request.arguments["tag"]?.stringValue else {
                        request.respond(["error": ["class": "GenericError", "desc": .string("unknown control command \(request.command); the supervisor knows revert {tag} and settle")]])
                        continue watching
                    }
                    let resume = request.arguments["resume"]?.boolValue ?? true
                    let mappingName = request.arguments["mapping"]?.stringValue ?? RAMImageMapping.privateMap.rawValue
                    guard let mapping = RAMImageMapping(rawValue: mappingName) else {
                        request.respond(["error": ["class": "GenericError", "desc": .string("unknown RAM image mapping \(mappingName); the supervisor knows "
                            + RAMImageMapping.allCases.map(\.rawValue).joined(separator: ", "))]])
                        continue watching
                    }
                    switch await replaceQEMU(child: child, client: client, tag: tag, resume: resume, mapping: mapping) {
                    case .refused(let why):
                        request.respond(["error": ["class": "GenericError", "desc": .string(why)]])
                        continue watching
                    case .replaced(let newChild, let newClient, let reply, let error):
                        // The old monitor is closed: its logger ends.
                        _ = await logger.value
                        child = newChild
                        client = newClient
                        if let error {
                            request.respond(["error": ["class": "GenericError", "desc": .string(error)], "return": .object(reply)])
                        } else {
                            request.respond(["return": .object(reply)])
                        }
                        break watching
                    case .gone(let exitRecord, let why):
                        _ = await logger.value
                        current.withLock { $0 = nil }
                        await reapRetired()
                        // Finished before answering: the client may start the lab again at once,
                        // and nothing of this supervisor's may touch the new one's files.
                        finish(exitRecord)
                        control?.stopListening()
                        request.respond(["error": ["class": "GenericError", "desc": .string(why)]])
                        // The command that asked for the revert holds the lock: its release removes the file.
                        await removeLockFileIfUnheld()
                        return exitRecord
                    }
                }
            }
        }
    }

    enum WatchOutcome: Sendable {
        case exited(ProcessExit?)
        case request(ControlRequest)
    }

    /// Appends `client`'s events to the event log until its monitor closes.
    func startEventLogger(_ client: QMPClient) -> Task<Void, Never> {
        let events = client.events()
        let eventLog = Paths.baseName(runtime.eventLogPath)
        let stateDirectory = try? runtime.labStateDirectory(create: false)
        return Task {
            for await event in events {
                let line: JSONValue = [
                    "time": .double(wallClockSeconds()), "event": .string(event.name), "data": event.data,
                    "qemu_timestamp": .double(event.timestamp),
                ]
                if let text = try? line.jsonString() { try? stateDirectory?.appendLine(eventLog, text) }
            }
        }
    }

    /// Waits until QEMU exits (its pidfd: an event), a control request
    /// arrives, or (for a lab owned for life) the owner goes away, which
    /// takes QEMU down and then waits for its exit.
    func watchQEMU(child: ChildProcess, client: QMPClient, control: ControlServer?) async -> WatchOutcome {
        await withTaskGroup(of: WatchOutcome?.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    if let exit = await child.wait(timeout: .seconds(3600)) { return .exited(exit) }
                }
                return nil
            }
            if let control {
                group.addTask { await control.next().map(WatchOutcome.request) }
            }
            if ownedForLife, let owner {
                // The owner (qlab run) died or let go without taking the lab down.
                group.addTask {
                    while !Task.isCancelled {
                        if owner.ownerGone {
                            await self.stop(child: child, client: client, urgent: false)
                            return nil
                        }
                        try? await Task.sleep(for: .milliseconds(200))
                    }
                    return nil
                }
            }
            var result = WatchOutcome.exited(nil)
            while let next = await group.next() {
                if let next {
                    result = next
                    break
                }
            }
            group.cancelAll()
            return result
        }
    }

    /// Takes QEMU down from inside: quit over the supervisor's monitor, then
    /// SIGTERM, then SIGKILL; SIGKILL at once when `urgent`. QEMU is this
    /// process's child and ``watch(child:client:)`` has not reaped it while
    /// this runs, so the pid is still QEMU's. After a fast revert the QEMU
    /// taken down is the one running now, not the one given.
    public func stop(child: ChildProcess, client: QMPClient, urgent: Bool) async {
        let (child, client) = current.withLock { $0 } ?? (child, client)
        try? runtime.requestStop()
        if !urgent {
            _ = try? await client.execute("quit", timeout: .seconds(3))
            if await ProcessTable.waitGone(child.pid, timeout: .seconds(5)) { return }
            child.send(.terminate)
            if await ProcessTable.waitGone(child.pid, timeout: .seconds(3)) { return }
        }
        child.send(.kill)
    }

    /// SIGKILL to the QEMU running now (a second Ctrl-C of `up --foreground`);
    /// nothing once it has been reaped.
    public func killCurrentQEMU() {
        current.withLock { current in
            current?.child.send(.kill)
        }
    }

    /// A lab whose owner died leaves no lock file either (the owner cannot
    /// remove it any more). Taken first, so a command holding it is not
    /// disturbed; an owner that let go while alive holds it and cleans up itself.
    func removeLockFileIfOwnerGone() async {
        guard owner?.ownerGone == true, let lock = try? await runtime.takeLock(timeout: .milliseconds(200), checkingOwner: false) else { return }
        lock.removeFile()
    }

    /// A lab whose QEMU ended by itself (guest power-off, a crash, `quit`
    /// from a client) leaves no lock file either: when no command holds the
    /// lock (one non-blocking `flock(2)` try), the file is removed. A command
    /// that holds it (`down`) removes it itself.
    func removeLockFileIfUnheld() async {
        guard FileSystem.entryExists(runtime.lockPath), let lock = try? await runtime.takeLock(timeout: .zero, checkingOwner: false) else { return }
        lock.removeFile()
    }

    func makeExitRecord(_ exit: ProcessExit?, requested: Bool, logOffset: Int) -> ExitRecord {
        let output = Self.readLog(runtime.qemuLogPath, from: logOffset)
        // A clean, requested exit has nothing to explain.
        let clean = requested && exit == .exited(0)
        // QEMU says nothing when it dies of SIGBUS: the cause qlab knows of is its file-backed RAM.
        let note = exit.flatMap { RAMFiles.sigbusNote($0, revert: ((try? runtime.record) ?? nil)?.revert ?? spec.record.revert) }
        let text = note.map { output.isEmpty ? $0 : output + "\n" + $0 } ?? output
        return ExitRecord(exit: exit, at: wallClockSeconds(), requested: requested, qemuOutput: text, diagnoses: clean ? [] : Diagnoser.diagnose(exit: exit, qemuOutput: text))
    }

    /// The log from `offset`, at most the last 64 KiB.
    package static func readLog(_ path: String, from offset: Int) -> String {
        guard let bytes = HostFiles.readBytes(path, limit: 64 << 20), offset <= bytes.count else { return "" }
        // A NUL byte becomes U+FFFD: the text goes into the exit record, whose strings never hold one (RecordFileError.decode).
        let tail = bytes[offset...].suffix(64 << 10).flatMap { $0 == 0 ? [0xEF, 0xBF, 0xBD] : [$0] }
        return String(decoding: tail, as: UTF8.self).trimmingCharacters(in: "\n ")
    }

    func finish(_ record: ExitRecord) {
        try? runtime.writeExitRecord(record)
        runtime.removeRuntimeFiles()
        // Without QEMU the live RAM file is garbage, and snapshot RAM images
        // are removed with the lab (docs/devices-snapshots.md).
        if let ram = spec.record.revert?.ramDirectory { runtime.removeRAMFiles(path: ram) }
    }
}

package func formatTimestamp(_ seconds: Double) -> String {
    UTCTime.iso8601Seconds(seconds)
}

extension String {
    package func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let first = s.first, set.contains(first) { s.removeFirst() }
        while let last = s.last, set.contains(last) { s.removeLast() }
        return String(s)
    }
}
