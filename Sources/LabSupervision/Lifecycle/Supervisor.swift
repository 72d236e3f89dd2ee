#if canImport(Glibc)
import Glibc
#endif
import Platform
import QMP

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
    let ownedForLife: Bool

    /// `ownerFD`: the owner pipe's read end, if any.
    public init(spec: LaunchSpec, ownerFD: Int32? = nil, ownedForLife: Bool = false) {
        self.spec = spec
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
        umask(0o177)
        if launchAbandoned {
            let record = ExitRecord(exit: nil, at: wallClockSeconds(), requested: true, qemuOutput: "qlab: the launch was abandoned before QEMU started", diagnoses: [])
            finish(record)
            await removeLockFileIfOwnerGone()
            return (.failed(record), nil, nil)
        }
        let child: ChildProcess
        do {
            let log = try stateDirectory.openForAppending(Paths.baseName(runtime.qemuLogPath))
            defer { close(log) }
            child = try ChildProcess.spawn(
                executable: spec.argv[0], arguments: Array(spec.argv.dropFirst()), stdin: .null,
                stdout: .descriptor(log), stderr: .descriptor(log))
        } catch {
            let record = ExitRecord(
                exit: nil, at: wallClockSeconds(), requested: false,
                qemuOutput: "qlab could not start QEMU: \(error); install qemu-system-x86 or set `qemu:` in the lab file", diagnoses: [])
            finish(record)
            return (.failed(record), nil, nil)
        }
        var record = spec.record
        record.qemuPID = child.pid
        record.supervisorPID = getpid()
        record.qemuStartTime = ProcessIdentity.startTime(child.pid)
        record.supervisorStartTime = ProcessIdentity.startTime(getpid())
        record.qemuLogOffset = startOffset
        try? runtime.writeRecord(record)

        // QEMU creates the monitor socket while it parses the command line;
        // until it answers, an early exit is a launch failure.
        let deadline = ContinuousClock.now + readyTimeout
        while ContinuousClock.now < deadline {
            if launchAbandoned {
                // QEMU is our unreaped child: its pid is ours to signal.
                kill(child.pid, SIGKILL)
                var exitRecord = makeExitRecord(child.wait(), requested: true, logOffset: startOffset)
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
            if FileSystem.entryExists(runtime.supervisorSocketPath),
                let client = try? await QMPClient.connect(path: runtime.supervisorSocketPath, timeout: .seconds(10))
            {
                return (.ready(qemuPID: child.pid), child, client)
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
        kill(child.pid, SIGKILL)
        let exit = child.wait()
        var exitRecord = makeExitRecord(exit, requested: false, logOffset: startOffset)
        exitRecord.qemuOutput += "\nqlab: QEMU's monitor did not answer within \(readyTimeout); QEMU was killed."
        finish(exitRecord)
        return (.failed(exitRecord), nil, nil)
    }

    /// Logs events until QEMU exits; then records the exit and cleans up.
    /// Returns the exit record.
    public func watch(child: ChildProcess, client: QMPClient) async -> ExitRecord {
        let logOffset = runtime.record?.qemuLogOffset ?? 0
        let events = client.events()
        let eventLog = Paths.baseName(runtime.eventLogPath)
        let stateDirectory = try? runtime.labStateDirectory(create: false)
        let logger = Task {
            for await event in events {
                let line: JSONValue = [
                    "time": .double(wallClockSeconds()), "event": .string(event.name), "data": event.data,
                    "qemu_timestamp": .double(event.timestamp),
                ]
                if let text = try? line.jsonString() { try? stateDirectory?.appendLine(eventLog, text) }
            }
        }
        // The monitor closes when QEMU exits, which ends the event stream: reap
        // then. waitpid is also polled, slowly, in case the monitor stays open.
        let exit: ProcessExit? = await withTaskGroup(of: ProcessExit?.self) { group in
            group.addTask {
                _ = await logger.value
                return await child.wait(timeout: .seconds(30))
            }
            group.addTask {
                while !Task.isCancelled {
                    if let exit = child.poll() { return exit }
                    try? await Task.sleep(for: .milliseconds(500))
                }
                return nil
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
            var result: ProcessExit?
            while let next = await group.next() {
                if let next {
                    result = next
                    break
                }
            }
            group.cancelAll()
            return result
        }
        client.close()
        _ = await logger.value
        let requested = runtime.stopRequested
            || client.eventHistory.contains { $0.name == "SHUTDOWN" && ["host-qmp-quit", "host-signal"].contains($0.data["reason"]?.stringValue ?? "") }
        let record = makeExitRecord(exit, requested: requested, logOffset: logOffset)
        finish(record)
        if ownedForLife { await removeLockFileIfOwnerGone() }
        return record
    }

    /// Takes QEMU down from inside: quit over the supervisor's monitor, then
    /// SIGTERM, then SIGKILL; SIGKILL at once when `urgent`. QEMU is this
    /// process's child and ``watch(child:client:)`` has not reaped it while
    /// this runs, so the pid is still QEMU's.
    public func stop(child: ChildProcess, client: QMPClient, urgent: Bool) async {
        try? runtime.requestStop()
        if !urgent {
            _ = try? await client.execute("quit", timeout: .seconds(3))
            if await ProcessTable.waitGone(child.pid, timeout: .seconds(5)) { return }
            kill(child.pid, SIGTERM)
            if await ProcessTable.waitGone(child.pid, timeout: .seconds(3)) { return }
        }
        kill(child.pid, SIGKILL)
    }

    /// A lab whose owner died leaves no lock file either (the owner cannot
    /// remove it any more). Taken first, so a command holding it is not
    /// disturbed; an owner that let go while alive holds it and cleans up itself.
    func removeLockFileIfOwnerGone() async {
        guard owner?.ownerGone == true, let lock = try? await runtime.takeLock(timeout: .milliseconds(200)) else { return }
        lock.removeFile()
    }

    func makeExitRecord(_ exit: ProcessExit?, requested: Bool, logOffset: Int) -> ExitRecord {
        let output = Self.readLog(runtime.qemuLogPath, from: logOffset)
        // A clean, requested exit has nothing to explain.
        let clean = requested && exit == .exited(0)
        return ExitRecord(exit: exit, at: wallClockSeconds(), requested: requested, qemuOutput: output, diagnoses: clean ? [] : Diagnoser.diagnose(output))
    }

    /// The log from `offset`, at most the last 64 KiB.
    package static func readLog(_ path: String, from offset: Int) -> String {
        guard let bytes = HostFiles.readBytes(path, limit: 64 << 20), offset <= bytes.count else { return "" }
        let tail = bytes[offset...].suffix(64 << 10)
        return String(decoding: tail, as: UTF8.self).trimmingCharacters(in: "\n ")
    }

    func finish(_ record: ExitRecord) {
        try? runtime.writeExitRecord(record)
        runtime.removeRuntimeFiles()
    }
}

package func formatTimestamp(_ seconds: Double) -> String {
    var time = time_t(seconds)
    var parts = tm()
    gmtime_r(&time, &parts)
    func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
    return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
}

extension String {
    package func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let first = s.first, set.contains(first) { s.removeFirst() }
        while let last = s.last, set.contains(last) { s.removeLast() }
        return String(s)
    }
}
