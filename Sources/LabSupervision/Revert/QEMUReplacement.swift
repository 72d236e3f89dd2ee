#if canImport(Glibc)
import Glibc
#endif
import Platform
import QMP

extension Supervisor {
    enum Replacement: Sendable {
        /// Nothing was done (not a fast lab, no RAM image): the old QEMU runs on.
        case refused(String)
        /// A new QEMU runs; `error` when it came up but the load or `cont` failed.
        case replaced(ChildProcess, QMPClient, reply: JSONObject, error: String?)
        /// The old QEMU is gone and no new one runs.
        case gone(ExitRecord, String)
    }

    /// A fast revert: replaces QEMU by a fresh one that maps snapshot `tag`'s
    /// RAM image copy-on-write and loads its device state and disks.
    ///
    /// 1. `quit` the old QEMU and wait until its sockets are gone (inotify):
    ///    by then its disks are closed (flushed, image locks released); it is
    ///    reaped in the background while it frees its memory;
    /// 2. start the same command line with `mem-path=RAMDIR/snap-TAG.ram,share=off`
    ///    and `-S` (and without `-pidfile`);
    /// 3. on the supervisor monitor: `x-ignore-shared` on (QEMU 7.2 has no
    ///    `-global` for it), HMP `loadvm TAG`, capability off, `cont` when
    ///    the old VM was running (as QEMU's own loadvm does).
    ///
    /// The record gets the new pid and start time and `mapped_snapshot`, the
    /// event log a `QLAB_QEMU_REPLACED` line; sockets and logs keep their
    /// paths, so clients reconnect by path.
    /// `resume` false: the new VM is left stopped and the reply's `resume`
    /// says whether the caller should `cont` it (it ran before): a client
    /// that reconnects first does so while QEMU's main loop is idle.
    func replaceQEMU(child: ChildProcess, client: QMPClient, tag: String, resume: Bool = true) async -> Replacement {
        let begin = ContinuousClock.now
        var steps: [JSONValue] = []
        func step(_ name: String, since start: ContinuousClock.Instant) {
            let ms = Double((ContinuousClock.now - start).components.attoseconds) / 1e15 + Double((ContinuousClock.now - start).components.seconds) * 1000
            steps.append(["step": .string(name), "ms": .double((ms * 1000).rounded() / 1000)])
        }
        let recorded: LabRecord?
        do { recorded = try runtime.record } catch { return .refused("\(error)") }
        guard var record = recorded else { return .refused("the lab record is missing") }
        guard let revert = record.revert, revert.method == .fast, let image = revert.imagePath(tag) else {
            return .refused("this lab reverts with loadvm (\(record.revert?.reason ?? "its record predates fast reverts")); no QEMU to replace")
        }
        do { try HMPCommand.validateSnapshotTag(tag) } catch { return .refused("\(error)") }
        guard FileSystem.entryExists(image) else {
            return .refused("snapshot \(tag) has no RAM image (\(image)): it was saved without the fast method; revert it with loadvm")
        }
        guard let argv = RAMFiles.restartArgv(spec.argv, path: image, memoryMiB: revert.memoryMiB, shared: false).map(Self.withoutPidFile) else {
            return .refused("the lab's command line has no qlab RAM backend")
        }

        // 1. The old QEMU quits: QEMU's cleanup closes its disks (flushed, image locks
        // released), then its chardevs, unlinking their sockets, then unmaps guest RAM
        // and exits. Once its sockets are gone nothing of it is in the new one's way:
        // the new QEMU starts while the old one still frees its RAM (the slow part
        // for a big dirty guest), and is reaped in the background.
        var start = ContinuousClock.now
        // As QEMU's loadvm: the VM runs after the revert if it ran before.
        let wasRunning = (try? await client.execute("query-status", timeout: .seconds(5)))?["running"]?.boolValue ?? true
        step("query-status", since: start)
        start = ContinuousClock.now
        let sockets = [runtime.qmpSocketPath, runtime.supervisorSocketPath, runtime.consoleSocketPath, runtime.agentSocketPath]
            .map(Paths.baseName).filter { FileSystem.entryExists(runtime.directory + "/" + $0) }
        _ = try? await client.execute("quit", timeout: .seconds(5))
        var oldExit: ProcessExit?
        let released = await EntryWatch.waitForRemoval(sockets, in: runtime.directory, orExitOf: child.pid, timeout: .seconds(10))
        if !released, child.poll() == nil {
            kill(child.pid, SIGKILL)  // our unreaped child
            oldExit = child.wait()
        } else {
            oldExit = child.poll()
        }
        client.close()
        current.withLock { $0 = nil }
        if oldExit == nil { retire(child) }
        // Whatever socket files a killed QEMU left are stale.
        if let directory = try? runtime.runtimeDirectory(create: false) {
            for socket in sockets { directory.remove(socket) }
        }
        step("quit old QEMU", since: start)
        if revert.mappedSnapshot == nil, let directory = try? runtime.ramDirectory(path: revert.ramDirectory, create: false) {
            // Nothing maps the live RAM file any more (QEMUs from now on map snapshot images): give its memory back.
            directory.remove(RAMFiles.live)
        }

        // 2. The new one.
        start = ContinuousClock.now
        let stateDirectory = try? runtime.labStateDirectory(create: false)
        try? stateDirectory?.appendLine(
            Paths.baseName(runtime.qemuLogPath),
            "=== qlab: replacing QEMU for lab \(record.name) (fast revert to \(tag)) at \(formatTimestamp(wallClockSeconds())) ===")
        let logOffset = FileSystem.size(runtime.qemuLogPath) ?? 0
        let newChild: ChildProcess
        do {
            guard let stateDirectory else { throw LabError.supervisor("the lab's state directory is missing") }
            let log = try stateDirectory.openForAppending(Paths.baseName(runtime.qemuLogPath))
            defer { close(log) }
            newChild = try ChildProcess.spawn(
                executable: argv[0], arguments: Array(argv.dropFirst()), stdin: .null, stdout: .descriptor(log), stderr: .descriptor(log))
        } catch {
            let exit = ExitRecord(exit: nil, at: wallClockSeconds(), requested: false, qemuOutput: "qlab could not start QEMU for a fast revert to \(tag): \(error)", diagnoses: [])
            return .gone(exit, exit.qemuOutput)
        }
        let oldPID = record.qemuPID
        record.qemuPID = newChild.pid
        record.qemuStartTime = ProcessIdentity.startTime(newChild.pid)
        record.qemuLogOffset = logOffset
        record.revert?.mappedSnapshot = tag
        try? runtime.writeRecord(record)
        step("spawn QEMU", since: start)

        start = ContinuousClock.now
        var newClient: QMPClient?
        while newClient == nil {
            // An owned lab's owner (qlab run) went away (Ctrl-C): no new QEMU outlives it.
            if ownedForLife && owner?.ownerGone == true {
                kill(newChild.pid, SIGKILL)
                var exit = makeExitRecord(newChild.wait(), requested: true, logOffset: logOffset)
                exit.qemuOutput += "\nqlab: the lab's owner went away during a fast revert; the new QEMU was killed."
                return .gone(exit, "the lab's owner went away during the revert")
            }
            if let exit = newChild.poll() {
                var exitRecord = makeExitRecord(exit, requested: false, logOffset: logOffset)
                exitRecord.qemuOutput += "\nqlab: QEMU ended while starting for a fast revert to \(tag)."
                let why = "the new QEMU \(exit) before its monitor answered: \(exitRecord.qemuOutput)"
                    + exitRecord.diagnoses.map { "\n\($0.id): \($0.fix)" }.joined()
                return .gone(exitRecord, why)
            }
            if ContinuousClock.now - start > .seconds(60) {
                kill(newChild.pid, SIGKILL)
                var exit = makeExitRecord(newChild.wait(), requested: false, logOffset: logOffset)
                exit.qemuOutput += "\nqlab: the new QEMU's monitor did not answer within 60 s during a fast revert; QEMU was killed."
                return .gone(exit, exit.qemuOutput)
            }
            // The socket's appearance (inotify) or QEMU's exit (pidfd) ends the wait; the owner is looked at every 200 ms.
            if await EntryWatch.waitForEntry(
                Paths.baseName(runtime.supervisorSocketPath), in: runtime.directory, orExitOf: newChild.pid, timeout: .milliseconds(200))
            {
                newClient = try? await QMPClient.connect(
                    path: runtime.supervisorSocketPath, timeout: .seconds(10), tracer: spec.traceQMP ? runtime.labTracer(client: "qlab-supervisor") : nil)
                // Between QEMU's bind(2) and listen(2) a connect is refused: the one case retried after a pause.
                if newClient == nil { try? await Task.sleep(for: .milliseconds(1)) }
            }
        }
        let monitor = newClient!
        current.withLock { $0 = (newChild, monitor) }
        step("connect", since: start)
        appendEvent("QLAB_QEMU_REPLACED", ["reason": "revert", "tag": .string(tag), "old_pid": .int(Int64(oldPID)), "new_pid": .int(Int64(newChild.pid)),
                                           "old_exit": .string(oldExit?.description ?? "quit; freeing its memory, reaped in the background")])

        // 3. Device state and disks of the snapshot; RAM is the image.
        var failure: String?
        do {
            start = ContinuousClock.now
            _ = try await monitor.execute("migrate-set-capabilities", arguments: Self.ignoreShared(true))
            step("x-ignore-shared on", since: start)
            start = ContinuousClock.now
            let output = try await monitor.humanMonitorCommand(try HMPCommand("loadvm", [tag]), timeout: .seconds(600))
            step("HMP loadvm", since: start)
            let text = output.filter { $0 != "\r" }.trimmingCharacters(in: "\n ")
            if !text.isEmpty {
                let logged = Self.readLog(runtime.qemuLogPath, from: logOffset)
                failure = "QEMU refused loadvm \(tag): \(text)" + (logged.isEmpty || text.contains(logged) ? "" : "\n" + logged)
            } else {
                start = ContinuousClock.now
                _ = try await monitor.execute("migrate-set-capabilities", arguments: Self.ignoreShared(false))
                if wasRunning && resume { _ = try await monitor.execute("cont") }
                step(wasRunning && resume ? "cont" : "x-ignore-shared off", since: start)
            }
        } catch {
            failure = "the fast revert to \(tag) failed on the new QEMU: \(error)"
        }
        var reply: JSONObject = [
            "qemu_pid": .int(Int64(newChild.pid)), "old_pid": .int(Int64(oldPID)), "steps": .array(steps),
            "via": .string("fresh QEMU on \(RAMFiles.image(tag))"), "resume": .bool(wasRunning && !resume),
        ]
        let total = ContinuousClock.now - begin
        reply["total_ms"] = .double(Double(total.components.seconds) * 1000 + Double(total.components.attoseconds) / 1e15)
        return .replaced(newChild, monitor, reply: reply, error: failure)
    }

    /// `argv` without `-pidfile FILE`: a QEMU removes its pid file when it exits,
    /// which for the old one would be the new one's; the record has the pid.
    static func withoutPidFile(_ argv: [String]) -> [String] {
        var result: [String] = []
        var index = argv.startIndex
        while index < argv.endIndex {
            if argv[index] == "-pidfile" {
                index += 2
                continue
            }
            result.append(argv[index])
            index += 1
        }
        return result
    }

    /// Reaps a QEMU that quit for a fast revert once it has freed its memory
    /// (its pidfd); the supervisor waits for all of them before it ends.
    func retire(_ child: ChildProcess) {
        let task = Task {
            if await child.wait(timeout: .seconds(60)) == nil {
                kill(child.pid, SIGKILL)  // still our unreaped child
                _ = child.wait()
            }
        }
        retiring.withLock { $0.append(task) }
    }

    /// Waits until every retired QEMU is reaped.
    func reapRetired() async {
        for task in retiring.withLock({ tasks in defer { tasks = [] }; return tasks }) { await task.value }
    }

    /// `migrate-set-capabilities` arguments turning `x-ignore-shared` on or off.
    static func ignoreShared(_ on: Bool) -> JSONObject {
        ["capabilities": [["capability": "x-ignore-shared", "state": .bool(on)]]]
    }

    /// One line of qlab's own in the event log (`QLAB_...`), between QEMU's events.
    func appendEvent(_ name: String, _ data: JSONObject) {
        let line: JSONValue = ["time": .double(wallClockSeconds()), "event": .string(name), "data": .object(data)]
        if let text = try? line.jsonString() {
            try? (try? runtime.labStateDirectory(create: false))??.appendLine(Paths.baseName(runtime.eventLogPath), text)
        }
    }
}
