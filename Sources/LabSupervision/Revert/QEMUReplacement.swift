#if canImport(Glibc)
import Glibc
#endif
// Glibc: Revert/ (its fast-revert trust work landed last) still calls the system itself; moving it onto Platform's
// wrappers (FileDescriptor.openAt, pipeCloseOnExec, ChildProcess.killAndReap) is what is left of issue 19 item 4.
import Platform
import QMP

extension Supervisor {
    enum Replacement: Sendable {
        /// Nothing was done (not a fast lab, no RAM image, a file the new QEMU needs is missing): the old QEMU runs on.
        case refused(String)
        /// A new QEMU runs; `error` when it came up but the load or `cont` failed.
        case replaced(ChildProcess, QMPClient, reply: JSONObject, error: String?)
        /// The old QEMU is gone and no new one runs.
        case gone(ExitRecord, String)
    }

    /// What a fast revert to one snapshot needs, checked before the old QEMU is touched.
    struct ReplacementPlan {
        var tag: String
        /// `RAMDIR/snap-TAG.ram`.
        var image: String
        /// The new QEMU's command line: the lab's, on the image copy-on-write (or on a copy, shared), with `-S`, without `-pidfile`.
        var argv: [String]
        var revert: RevertRecord
        var mapping: RAMImageMapping = .privateMap
        var directory: PrivateDirectory
    }

    /// The supervisor's own steps of a replacement, timed for the reply.
    struct ReplacementSteps {
        let begin = ContinuousClock.now
        var steps: [JSONValue] = []

        mutating func record(_ name: String, since start: ContinuousClock.Instant) {
            steps.append(["step": .string(name), "ms": .double(Self.milliseconds(ContinuousClock.now - start))])
        }

        static func milliseconds(_ duration: Duration) -> Double {
            let ms = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
            return (ms * 1000).rounded() / 1000
        }
    }

    /// A fast revert: replaces QEMU by a fresh one that maps snapshot `tag`'s
    /// RAM image copy-on-write and loads its device state and disks.
    ///
    /// 0. check what the new QEMU needs (``planReplacement(tag:)``): the RAM
    ///    image as the save recorded it, the disk files and their backing
    ///    chains; if anything is missing, refuse with the old QEMU untouched;
    /// 1. `quit` the old QEMU and wait until its sockets are gone (inotify):
    ///    by then its disks are closed (flushed, image locks released); it is
    ///    reaped in the background while it frees its memory;
    /// 2. start the same command line with `mem-path=RAMDIR/snap-TAG.ram,share=off`
    ///    and `-S` (and without `-pidfile`);
    /// 3. on the supervisor monitor: `x-ignore-shared` on (QEMU 7.2 has no
    ///    `-global` for it), HMP `loadvm TAG`, capability off, `cont` when
    ///    the old VM was running (as QEMU's own loadvm does).
    ///
    /// The record gets the new pid and start time, `mapped_snapshot` and the
    /// step under way (``PendingSnapshotStep``), the event log a
    /// `QLAB_QEMU_REPLACED` line; sockets and logs keep their paths, so
    /// clients reconnect by path. `resume` false: the new VM is left stopped
    /// and the reply's `resume` says whether the caller should `cont` it (it
    /// ran before): a client that reconnects first does so while QEMU's main
    /// loop is idle.
    func replaceQEMU(child: ChildProcess, client: QMPClient, tag: String, resume: Bool = true, mapping: RAMImageMapping = .privateMap) async -> Replacement {
        var steps = ReplacementSteps()
        var start = ContinuousClock.now
        let plan: ReplacementPlan
        switch planReplacement(tag: tag, mapping: mapping) {
        case .success(let found): plan = found
        case .failure(let refusal): return .refused(refusal.why)
        }
        steps.record("check RAM image and disks", since: start)
        // A shared mapping's file, while the old QEMU runs untouched: a failure refuses the revert.
        start = ContinuousClock.now
        switch await prepareMappedCopy(plan) {
        case .success(let step?): steps.record(step, since: start)
        case .success(nil): break
        case .failure(let refusal): return .refused(refusal.why)
        }
        start = ContinuousClock.now
        let wasRunning = await ranBeforeRevert(client, earlier: plan.revert.pending)
        updateRecord { $0.revert?.pending = PendingSnapshotStep(operation: .load, tag: tag, resume: wasRunning, phase: .started) }
        steps.record("query-status", since: start)

        start = ContinuousClock.now
        let oldPID = child.pid
        let oldExit = await quitForReplacement(child: child, client: client)
        steps.record("quit old QEMU", since: start)
        if plan.revert.mappedSnapshot == nil, let directory = try? runtime.ramDirectory(path: plan.revert.ramDirectory, create: false) {
            // Nothing maps the live RAM file any more (QEMUs from now on map snapshot images): give its memory back.
            directory.remove(RAMFiles.live)
        }

        start = ContinuousClock.now
        let newChild: ChildProcess
        let logOffset: Int
        switch spawnReplacement(plan) {
        case .success(let spawned): (newChild, logOffset) = spawned
        case .failure(let gone): return gone.replacement(lost: Self.lostWithOldQEMU(oldPID))
        }
        steps.record("spawn QEMU", since: start)

        start = ContinuousClock.now
        let monitor: QMPClient
        switch await connectReplacement(newChild, tag: tag, logOffset: logOffset) {
        case .success(let connected): monitor = connected
        case .failure(let gone): return gone.replacement(lost: Self.lostWithOldQEMU(oldPID))
        }
        current.withLock { $0 = (newChild, monitor) }
        steps.record("connect", since: start)
        appendEvent(
            "QLAB_QEMU_REPLACED",
            ["reason": "revert", "tag": .string(tag), "old_pid": .int(Int64(oldPID)), "new_pid": .int(Int64(newChild.pid)),
             "old_exit": .string(oldExit?.description ?? "quit; freeing its memory, reaped in the background")])

        let failure = await loadSnapshot(on: monitor, tag: tag, logOffset: logOffset, resume: wasRunning && resume, steps: &steps)
        updateRecord { record in
            if failure != nil {
                record.revert?.pending?.phase = .failed
            } else if wasRunning && !resume {
                record.revert?.pending?.phase = .loaded
            } else {
                record.revert?.pending = nil
            }
        }
        var reply: JSONObject = [
            "qemu_pid": .int(Int64(newChild.pid)), "old_pid": .int(Int64(oldPID)), "steps": .array(steps.steps),
            "via": .string("fresh QEMU on " + (mapping == .privateMap ? RAMFiles.image(tag) : "\(RAMFiles.mappedCopy) (\(mapping.rawValue) of \(RAMFiles.image(tag)), share=on)")),
            "resume": .bool(wasRunning && !resume),
        ]
        reply["total_ms"] = .double(ReplacementSteps.milliseconds(ContinuousClock.now - steps.begin))
        return .replaced(newChild, monitor, reply: reply, error: failure)
    }

    struct Refusal: Error {
        var why: String
    }

    /// Step 0: what the new QEMU needs, checked while the old one runs
    /// untouched: a fast lab, a valid tag, the RAM image the save recorded
    /// (its fingerprint), a command line with qlab's RAM backend, and every
    /// disk file and backing file the command line opens.
    func planReplacement(tag: String, mapping: RAMImageMapping = .privateMap) -> Result<ReplacementPlan, Refusal> {
        let recorded: LabRecord?
        do { recorded = try runtime.record } catch { return .failure(Refusal(why: "\(error)")) }
        guard let record = recorded else { return .failure(Refusal(why: "the lab record is missing")) }
        guard let revert = record.revert, revert.method == .fast, let image = revert.imagePath(tag) else {
            return .failure(Refusal(why: "this lab reverts with loadvm (\(record.revert?.reason ?? "its record predates fast reverts")); no QEMU to replace"))
        }
        do { try HMPCommand.validateSnapshotTag(tag) } catch { return .failure(Refusal(why: "\(error)")) }
        guard let directory = try? runtime.ramDirectory(path: revert.ramDirectory, create: false) else {
            return .failure(Refusal(why: "the lab's RAM directory \(revert.ramDirectory ?? "") is missing"))
        }
        if let obstacle = RAMImage.loadObstacle(tag: tag, revert: revert, directory: directory) { return .failure(Refusal(why: obstacle)) }
        let mapped = mapping == .privateMap ? image : directory.path(RAMFiles.mappedCopy)
        guard let argv = RAMFiles.restartArgv(spec.argv, path: mapped, memoryMiB: revert.memoryMiB, shared: mapping != .privateMap).map(Self.withoutPidFile) else {
            return .failure(Refusal(why: "the lab's command line has no qlab RAM backend"))
        }
        let missing = ReplacementPreflight.missingFiles(argv)
        guard missing.isEmpty else {
            return .failure(Refusal(why: "a QEMU started for the fast revert to \(tag) could not open " + missing.joined(separator: "; ")
                + ". qlab refused before the old QEMU quit: the lab runs on as it was, but it cannot be reverted until the file is back (or `qlab down` and `qlab up --fresh-disk`)"))
        }
        if mapping == .premade, !FileSystem.entryExists(directory.path(RAMFiles.premadeCopy(tag))) {
            return .failure(Refusal(why: "no premade copy of snapshot \(tag)'s RAM image (\(directory.path(RAMFiles.premadeCopy(tag)))): make one first"))
        }
        return .success(ReplacementPlan(tag: tag, image: image, argv: argv, revert: revert, mapping: mapping, directory: directory))
    }

    /// The file a shared mapping's QEMU maps, `RAMDIR/mapped.ram`: for
    /// ``RAMImageMapping/copy`` a copy of the image made now (``OffPoolWait``:
    /// it blocks in read and write), for ``RAMImageMapping/premade``
    /// the copy made beforehand, renamed. The old QEMU may still map an
    /// earlier `mapped.ram`: a rename over it leaves it that file. Returns
    /// the step's name (nil for a private map, which needs no file).
    func prepareMappedCopy(_ plan: ReplacementPlan) async -> Result<String?, Refusal> {
        let (directory, tag) = (plan.directory, plan.tag)
        switch plan.mapping {
        case .privateMap:
            return .success(nil)
        case .premade:
            if case .failure(let error) = directory.handle.renameEntry(RAMFiles.premadeCopy(tag), to: RAMFiles.mappedCopy) {
                return .failure(Refusal(why: "cannot rename \(directory.path(RAMFiles.premadeCopy(tag))) to \(RAMFiles.mappedCopy): \(error)"))
            }
            return .success("rename premade copy to \(RAMFiles.mappedCopy)")
        case .copy:
            // Off the cooperative pool: the copy blocks in read and write for as long as the image is big.
            let copied: Result<Int, Refusal>
            do {
                copied = try await OffPoolWait.run { _ in
                    Result { try RAMImage.copyImage(in: directory, tag: tag, to: RAMFiles.mappedCopy) }.mapError { Refusal(why: "\($0)") }
                }
            } catch {
                copied = .failure(Refusal(why: "\(error)"))
            }
            return copied.map { "copy RAM image to \(RAMFiles.mappedCopy) (\($0 >> 20) MiB)" }
        }
    }

    /// Whether the VM runs after the revert: it does if it ran before (as
    /// QEMU's loadvm), and a QEMU an earlier revert left stopped (its load
    /// failed, or its client never resumed it) counts as running when the VM
    /// ran before that revert. A VM a failed in-place load left in
    /// `restore-vm` ran before it.
    func ranBeforeRevert(_ client: QMPClient, earlier: PendingSnapshotStep?) async -> Bool {
        guard let status = (try? await client.execute("query-status", timeout: .seconds(5)))?["status"]?.stringValue else { return true }
        switch status {
        case "running", "restore-vm": return true
        case "prelaunch": return earlier?.operation == .load && earlier?.resume == true
        default: return false
        }
    }

    /// Step 1: the old QEMU quits. QEMU's cleanup closes its disks (flushed,
    /// image locks released), then its chardevs, unlinking their sockets, then
    /// unmaps guest RAM and exits. Once its sockets are gone nothing of it is
    /// in the new one's way: the new QEMU starts while the old one still frees
    /// its RAM (the slow part for a big dirty guest), and is reaped in the
    /// background. One that keeps its sockets for 10 s is killed. Returns its
    /// exit when it has ended already.
    func quitForReplacement(child: ChildProcess, client: QMPClient) async -> ProcessExit? {
        let runtime = self.runtime
        let sockets = [runtime.qmpSocketPath, runtime.supervisorSocketPath, runtime.consoleSocketPath, runtime.agentSocketPath]
            .map(Paths.baseName).filter { FileSystem.entryExists(runtime.directory + "/" + $0) }
        _ = try? await client.execute("quit", timeout: .seconds(5))
        let released = await EntryWatch.waitForRemoval(sockets, in: runtime.directory, orExitOf: child.pid, timeout: .seconds(10))
        let exit: ProcessExit?
        if !released && child.poll() == nil {
            exit = await killAndReap(child)
        } else {
            exit = child.poll()
            if exit == nil { retire(child) }
        }
        client.close()
        current.withLock { $0 = nil }
        // Whatever socket files a killed QEMU left are stale.
        if let directory = try? runtime.runtimeDirectory(create: false) {
            for socket in sockets { directory.remove(socket) }
        }
        return exit
    }

    /// A new QEMU that did not come up: how it ended, and why in words.
    struct Gone: Error {
        var exit: ExitRecord
        var why: String

        /// The replacement's result, saying what was lost with the old QEMU.
        func replacement(lost: String) -> Replacement {
            var exit = self.exit
            exit.qemuOutput += "\n" + lost
            return .gone(exit, why + "\n" + lost)
        }
    }

    /// What a failed replacement lost: it runs only once the old QEMU has quit.
    static func lostWithOldQEMU(_ pid: pid_t) -> String {
        "qlab: the old QEMU (pid \(pid)) had already quit for the revert, so the lab is down: its running guest is gone, and so are its snapshots' RAM images"
            + " (removed with the lab; snapshots saved with the fast method cannot be loaded again). The disk overlay keeps the disk and its snapshots. `qlab up` starts the lab again."
    }

    /// Step 2: the new QEMU, its output appended to the lab's QEMU log after
    /// a marker line; the record gets its pid. Returns it and the log offset
    /// of its output.
    func spawnReplacement(_ plan: ReplacementPlan) -> Result<(ChildProcess, Int), Gone> {
        let runtime = self.runtime
        let stateDirectory = try? runtime.labStateDirectory(create: false)
        try? stateDirectory?.appendLine(
            Paths.baseName(runtime.qemuLogPath),
            "=== qlab: replacing QEMU for lab \(spec.record.name) (fast revert to \(plan.tag)) at \(formatTimestamp(wallClockSeconds())) ===")
        let logOffset = FileSystem.size(runtime.qemuLogPath) ?? 0
        let child: ChildProcess
        do {
            guard let stateDirectory else { throw LabError.supervisor("the lab's state directory is missing") }
            let log = try stateDirectory.openForAppending(Paths.baseName(runtime.qemuLogPath))
            defer { close(log) }
            child = try ChildProcess.spawn(
                executable: plan.argv[0], arguments: Array(plan.argv.dropFirst()), stdin: .null, stdout: .descriptor(log), stderr: .descriptor(log), keepDescriptors: cardFDs)
        } catch {
            let exit = ExitRecord(exit: nil, at: wallClockSeconds(), requested: false, qemuOutput: "qlab could not start QEMU for a fast revert to \(plan.tag): \(error)", diagnoses: [])
            return .failure(Gone(exit: exit, why: exit.qemuOutput))
        }
        updateRecord { record in
            record.qemuPID = child.pid
            record.qemuStartTime = ProcessIdentity.startTime(child.pid)
            record.qemuLogOffset = logOffset
            record.revert?.mappedSnapshot = plan.tag
        }
        return .success((child, logOffset))
    }

    /// Waits until the new QEMU's supervisor monitor answers: the socket's
    /// appearance (inotify) or QEMU's exit (pidfd) ends each wait; the owner
    /// of an owned lab is looked at every 200 ms, and 60 s is the limit.
    func connectReplacement(_ child: ChildProcess, tag: String, logOffset: Int) async -> Result<QMPClient, Gone> {
        let runtime = self.runtime
        let start = ContinuousClock.now
        while true {
            // An owned lab's owner (qlab run) went away (Ctrl-C): no new QEMU outlives it.
            if ownedForLife && owner?.ownerGone == true {
                var exit = makeExitRecord(await killAndReap(child), requested: true, logOffset: logOffset)
                exit.qemuOutput += "\nqlab: the lab's owner went away during a fast revert; the new QEMU was killed."
                return .failure(Gone(exit: exit, why: "the lab's owner went away during the revert"))
            }
            if let ended = child.poll() {
                var exit = makeExitRecord(ended, requested: false, logOffset: logOffset)
                exit.qemuOutput += "\nqlab: QEMU ended while starting for a fast revert to \(tag)."
                let why = "the new QEMU \(ended) before its monitor answered: \(exit.qemuOutput)" + exit.diagnoses.map { "\n\($0.id): \($0.fix)" }.joined()
                return .failure(Gone(exit: exit, why: why))
            }
            if ContinuousClock.now - start > .seconds(60) {
                var exit = makeExitRecord(await killAndReap(child), requested: false, logOffset: logOffset)
                exit.qemuOutput += "\nqlab: the new QEMU's monitor did not answer within 60 s during a fast revert; QEMU was killed."
                return .failure(Gone(exit: exit, why: exit.qemuOutput))
            }
            if await EntryWatch.waitForEntry(
                Paths.baseName(runtime.supervisorSocketPath), in: runtime.directory, orExitOf: child.pid, timeout: .milliseconds(200))
            {
                if let client = try? await QMPClient.connect(
                    path: runtime.supervisorSocketPath, timeout: .seconds(10), tracer: spec.traceQMP ? runtime.labTracer(client: "qlab-supervisor") : nil)
                {
                    return .success(client)
                }
                // Between QEMU's bind(2) and listen(2) a connect is refused: the one case retried after a pause.
                try? await Task.sleep(for: .milliseconds(1))
            }
        }
    }

    /// Step 3: device state and disks of the snapshot (RAM is the image):
    /// `x-ignore-shared` on, HMP `loadvm`, off again, `cont` when `resume`.
    /// Returns why it failed (QEMU's words and log), nil when it loaded.
    func loadSnapshot(on monitor: QMPClient, tag: String, logOffset: Int, resume: Bool, steps: inout ReplacementSteps) async -> String? {
        do {
            var start = ContinuousClock.now
            _ = try await monitor.execute("migrate-set-capabilities", arguments: Self.ignoreShared(true))
            steps.record("x-ignore-shared on", since: start)
            start = ContinuousClock.now
            let output = try await monitor.humanMonitorCommand(try HMPCommand("loadvm", [tag]), timeout: .seconds(600))
            steps.record("HMP loadvm", since: start)
            let text = output.filter { $0 != "\r" }.trimmingCharacters(in: "\n ")
            start = ContinuousClock.now
            _ = try await monitor.execute("migrate-set-capabilities", arguments: Self.ignoreShared(false))
            if !text.isEmpty {
                let logged = Self.readLog(runtime.qemuLogPath, from: logOffset)
                return "QEMU refused loadvm \(tag): \(text)" + (logged.isEmpty || text.contains(logged) ? "" : "\n" + logged)
            }
            if resume { _ = try await monitor.execute("cont") }
            steps.record(resume ? "cont" : "x-ignore-shared off", since: start)
            return nil
        } catch {
            return "the fast revert to \(tag) failed on the new QEMU: \(error)"
        }
    }

    /// Changes `lab.json` as it is on disk now (the session that asked for
    /// the revert wrote it last) and writes it back.
    func updateRecord(_ change: (inout LabRecord) -> Void) {
        let store = runtime.records
        _ = try? store.update(change)
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

    /// SIGKILL to our unreaped child (its pid is still its own), then its
    /// exit, waited for off the cooperative pool (the pidfd, ``ChildProcess/wait(timeout:)``).
    /// One that has not ended within 60 s is reaped in the background
    /// (``retire(_:)``) and nil returned.
    func killAndReap(_ child: ChildProcess) async -> ProcessExit? {
        kill(child.pid, SIGKILL)
        if let exit = await child.wait(timeout: .seconds(60)) { return exit }
        retire(child)
        return nil
    }

    /// Reaps a QEMU that quit for a fast revert once it has freed its memory
    /// (its pidfd, off the cooperative pool); one still there after 60 s is
    /// killed. The supervisor waits for all of them before it ends.
    func retire(_ child: ChildProcess) {
        let task = Task {
            if await child.wait(timeout: .seconds(60)) == nil {
                kill(child.pid, SIGKILL)  // still our unreaped child
                _ = await child.wait(timeout: .seconds(600))
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
