import Foundation
import LabCore
@testable import LabSupervision
import Platform
import QMP
import Testing

/// Who may change a lab, and lock files that go with their lab (issue 18, items 1-2, 5): no QEMU.
@Suite("Lab owner and lock files (no QEMU)", .serialized)
struct LabOwnerTests {
    /// A record of a lab "running" nothing, with `owner`.
    static func writeRecord(_ runtime: LabRuntime, owner: LabOwner?) throws {
        try runtime.makeDirectories()
        var record = LabRecord(
            name: runtime.name, labFile: "/nonexistent/x.yaml", guest: "g", qemuPID: 0, supervisorPID: 0, foreground: false,
            startedAt: wallClockSeconds(), accel: AccelDecision(.tcg, reason: "test"), consoleLog: nil, devices: [],
            passthroughHosts: [], qemuLogOffset: 0)
        record.owner = owner
        try runtime.writeRecord(record)
    }

    /// An owner that runs and is not this process nor its ancestor is believed (exit 4, named);
    /// once it is gone, or for a pid whose start time differs, it is not; this process is its own owner.
    @Test func onlyALiveOwnerThatIsNotThisProcessRefuses() async throws {
        let env = try QLabTestEnvironment(prefix: "qown")
        defer { env.cleanUp() }
        let runtime = env.runtime("owned")
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["600"]
        try sleeper.run()
        defer { if sleeper.isRunning { kill(sleeper.processIdentifier, SIGKILL) } }
        let pid = sleeper.processIdentifier
        let start = try #require(ProcessIdentity.startTime(pid))
        let owner = LabOwner(command: "qlab run owned.yaml", pid: pid, startTime: start, since: wallClockSeconds())

        try Self.writeRecord(runtime, owner: owner)
        do {
            _ = try await runtime.takeLock(timeout: .seconds(1))
            Issue.record("a live owner's lab was locked by another process")
        } catch let error as LabError {
            #expect(error.exitStatus == .busy)
            #expect("\(error)".contains("qlab run owned.yaml (pid \(pid), since "), "\(error)")
        }
        // The CLI says the same, with the busy status of the one table.
        let down = try env.qlab("down", "owned")
        #expect(down.status == ExitStatus.busy.rawValue, "\(down.output)")
        #expect(down.stderr.contains("pid \(pid)") && down.stderr.contains("qlab run owned.yaml"), "\(down.stderr)")

        // The same pid with another start time is not the owner (a reused pid).
        try Self.writeRecord(runtime, owner: LabOwner(command: "qlab run", pid: pid, startTime: start + 1, since: 0))
        _ = try await runtime.takeLock(timeout: .seconds(1))
        // This process owns it: its own commands go on.
        try Self.writeRecord(runtime, owner: LabOwner.thisProcess())
        _ = try await runtime.takeLock(timeout: .seconds(1))
        // The owner ended: nothing owns the lab.
        try Self.writeRecord(runtime, owner: owner)
        kill(pid, SIGKILL)
        sleeper.waitUntilExit()
        _ = try await runtime.takeLock(timeout: .seconds(1))
    }

    /// The owner survives the record's round trip (the supervisor and fast revert rewrite it).
    @Test func ownerIsKeptInTheRecord() throws {
        let owner = LabOwner(command: "qlab run a.yaml", pid: 42, startTime: 4242, since: 1.5)
        var record = LabRecord(
            name: "a", labFile: "/a.yaml", guest: "g", qemuPID: 1, supervisorPID: 2, foreground: false, startedAt: 1,
            accel: AccelDecision(.tcg, reason: "r"), consoleLog: nil, devices: [], passthroughHosts: [], qemuLogOffset: 0)
        record.owner = owner
        let json = record.json
        #expect(json["owner"]?["start_time"]?.intValue == 4242, "\(json)")
        #expect(LabRecord(json)?.owner == owner)
        #expect(LabOwner.commandText(["/usr/local/bin/qlab", "run", "x.yaml"]) == "qlab run x.yaml")
    }

    /// A lock released once its lab has no runtime dir takes its file with it; one of a
    /// running lab stays; and a holder that removed its file never removes the next holder's.
    @Test func aLockFileGoesWithItsLab() async throws {
        let env = try QLabTestEnvironment(prefix: "qown")
        defer { env.cleanUp() }
        let runtime = env.runtime("gone")
        try runtime.makeDirectories()
        do { _ = try await runtime.takeLock() }
        #expect(FileManager.default.fileExists(atPath: runtime.lockPath), "a running lab keeps its lock file")
        do {
            let lock = try await runtime.takeLock()
            runtime.removeRuntimeFiles()
            withExtendedLifetime(lock) {}
        }
        #expect(!FileManager.default.fileExists(atPath: runtime.lockPath), "released after the lab went down: the file went too")

        let first = try await runtime.takeLock()
        first.removeFile()
        let second = try await runtime.takeLock()
        let secondFile = try FileManager.default.attributesOfItem(atPath: runtime.lockPath)[.systemFileNumber] as? UInt64
        _ = consume first
        #expect(
            (try? FileManager.default.attributesOfItem(atPath: runtime.lockPath)[.systemFileNumber] as? UInt64) == secondFile,
            "the first holder's release left the second holder's file alone")
        withExtendedLifetime(second) {}
    }

    /// One claim on a lab's console at a time: a second is busy (exit 4) naming the first
    /// holder's command, pid and since; the file is 0600; released, the console can be claimed
    /// again; the lab's runtime files go with it.
    @Test func aConsoleClaimIsOneAtATime() throws {
        let env = try QLabTestEnvironment(prefix: "qown")
        defer { env.cleanUp() }
        let runtime = env.runtime("console")
        try runtime.makeDirectories()
        let holder = LabOwner(command: "qlab exec console -- sleep 9", pid: 4242, startTime: 1, since: 1_700_000_000)
        var first: ConsoleClaim? = try ConsoleClaim.take(runtime, holder: holder)
        let path = runtime.directory + "/" + ConsoleClaim.fileName
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o600)
        do {
            _ = try ConsoleClaim.take(runtime)
            Issue.record("a second claim of a claimed console was granted")
        } catch let error as LabError {
            #expect(error.exitStatus == .busy)
            #expect("\(error)".contains("the console of lab console is in use by \(holder.description)"), "\(error)")
        }
        withExtendedLifetime(first) {}
        first = nil
        _ = try ConsoleClaim.take(runtime)
        runtime.removeRuntimeFiles()
        #expect(!FileManager.default.fileExists(atPath: runtime.directory), "the runtime dir (and its console.lock) stays")
    }

    /// `qlab list` removes a lock file no process holds of a lab with no runtime dir, and
    /// leaves one a process holds.
    @Test func listRemovesOnlyUnheldLockFiles() async throws {
        let env = try QLabTestEnvironment(prefix: "qown")
        defer { env.cleanUp() }
        let held = try await env.runtime("held").takeLock()
        // As a killed command leaves it: a lock file, no runtime dir, no holder.
        let ghost = env.runtime("ghost").lockPath
        let fd = open(ghost, O_CREAT | O_WRONLY | O_EXCL, 0o600)
        #expect(fd >= 0)
        close(fd)
        let list = try env.qlab("list")
        #expect(list.status == 0, "\(list.output)")
        #expect(!FileManager.default.fileExists(atPath: ghost), "the unheld lock file of a lab not running stays")
        #expect(FileManager.default.fileExists(atPath: held.path), "a held lock file was removed")
        withExtendedLifetime(held) {}
    }
}

/// A second shell against a `qlab run`, a record a newer qlab wrote, and lock files,
/// with real QEMU 7.2 (TCG) and the test guest.
@Suite("Lab ownership and unreadable records (real guest)", .serialized)
struct OwnershipQEMUTests {
    /// `down`, `reset`, `snapshot save` and `rm` from another process while `qlab run` uses
    /// the lab: refused (exit 4) naming the run's command and pid, the run and its QEMU go on.
    /// The run's own hook may (its `rm` gets past the owner to "is running; `qlab down` first", exit 1).
    /// `down --force`: the run ends cancelled (143, reports written, the rest `cancelled`),
    /// the lab is down, and no QEMU of the test remains.
    @Test func aLabARunUsesBelongsToTheRun() async throws {
        let env = try QLabTestEnvironment.withGuestImages(prefix: "qown")
        defer { env.cleanUp() }
        let hook = "\(QLabTestEnvironment.qlabExecutable) rm $QLAB_WORKER 2> \(env.root)/hook-rm.err; echo $? > \(env.root)/hook-rm.status"
        let file = try env.writeGuestLab("owned", tests: CancellationQEMUTests.sleeperTests, extra: "hooks:\n  before_each: \"\(hook)\"")
        let json = env.root + "/report.json"
        let run = try BackgroundQLab(env, ["run", file, "--json-report", json])
        #expect(
            waitUntil(limit: .seconds(300)) { CancellationQEMUTests.sleeping(env, "owned") }, "the sleeper never started: \(run.stdout)\(run.stderr)")
        let qemu = env.qemuProcesses()
        #expect(qemu.count == 1, "\(qemu)")
        let hookStatus = try String(contentsOfFile: env.root + "/hook-rm.status", encoding: .utf8)
        let hookError = try String(contentsOfFile: env.root + "/hook-rm.err", encoding: .utf8)
        #expect(hookStatus.trimmingSpaces() == "1" && hookError.contains("owned is running") && hookError.contains("`qlab down owned` first"), "\(hookStatus) \(hookError)")

        let status = try env.qlab("status", "owned", "--json")
        let owner = try JSONValue.parse(status.stdout)["owner"]
        #expect(owner?["pid"]?.intValue == Int(run.pid), "\(status.output)")

        // A second run of the lab is busy too (exit 4, not a test result), naming the run.
        let holder = LabHolder(command: "qlab run \(file)", pid: run.pid)
        for command in [["down", "owned"], ["reset", "owned"], ["snapshot", "save", "owned", "mine"], ["rm", "owned"], ["run", file]] {
            holder.expectRefused(try env.qlab(command), saying: "(pid \(run.pid), since ", "\(command)")
        }
        #expect(run.process.isRunning, "the run ended: \(run.stdout)\(run.stderr)")
        #expect(env.qemuProcesses() == qemu, "the run's QEMU changed under it")

        let forced = try env.qlab("down", "--force", "owned")
        #expect(forced.status == 0, "\(forced.output)")
        #expect(forced.stdout.contains("its owner ended its run"), "\(forced.output)")
        #expect(forced.stderr.contains("pid \(run.pid)"), "\(forced.stderr)")
        // `down --force` returns once the run ended.
        #expect(!run.process.isRunning || waitUntil(limit: .seconds(5)) { !run.process.isRunning })
        #expect(run.finish() == 143, "\(run.stdout)\(run.stderr)")
        #expect(run.stdout.contains("1 passed, 2 cancelled"), "\(run.stdout)")
        let report = try TestReport(path: json)
        #expect(report.results.map(\.outcome) == [.passed, .cancelled, .cancelled])
        #expect(env.qemuProcesses().isEmpty, "\(env.qemuProcesses())")
        CancellationQEMUTests.expectNothingLeft(env, "owned", "after down --force")
        #expect(try env.qlab("status", "owned").stdout.contains("owned: stopped"))
    }

    /// A `lab.json` whose device state this version does not know (a newer qlab): `status`
    /// says unreadable, naming file and field (exit 1), never "stopped"; `hotplug` refuses;
    /// `down` stops the QEMU (found by its pid file) and only then removes the files.
    @Test func aRecordFromANewerQlabIsNeverStopped() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment(prefix: "qown")
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("newer", tests: "  t: {run: \"true\"}")
        let up = try env.qlab("up", file)
        #expect(up.status == 0, "\(up.output)")
        let runtime = env.runtime("newer")
        let pid = try #require(Int32((try String(contentsOfFile: runtime.pidFilePath, encoding: .utf8)).trimmingSpaces()))
        let text = try String(contentsOfFile: runtime.recordPath, encoding: .utf8)
        let newer = text.replacingOccurrences(of: #""state" : "detached""#, with: #""state" : "parked""#)
            .replacingOccurrences(of: #""state": "detached""#, with: #""state": "parked""#)
        #expect(newer != text, "the record has no detached device: \(text)")
        try newer.write(toFile: runtime.recordPath, atomically: true, encoding: .utf8)

        let status = try env.qlab("status", "newer")
        #expect(status.status == 1, "\(status.output)")
        #expect(status.stdout.contains("newer: unreadable"), "\(status.output)")
        #expect(status.stdout.contains(runtime.recordPath) && status.stdout.contains("devices[0].state"), "\(status.output)")
        let statusJSON = try JSONValue.parse(try env.qlab("status", "newer", "--json").stdout)
        #expect(statusJSON["state"]?.stringValue == "unreadable")
        #expect(statusJSON["problem"]?.stringValue?.contains("devices[0].state") == true, "\(statusJSON)")
        let hotplug = try env.qlab("hotplug", "newer", "scsi-lsi")
        #expect(hotplug.status == 1 && hotplug.stderr.contains("devices[0].state"), "\(hotplug.output)")
        #expect(ProcessTable.isRunning(pid), "QEMU died before down")

        let down = try env.qlab("down", "newer")
        #expect(down.status == 0, "\(down.output)")
        #expect(down.stdout.contains("record unreadable; QEMU found by its pid file and stopped"), "\(down.output)")
        #expect(!ProcessTable.isRunning(pid), "down returned with QEMU \(pid) running")
        CancellationQEMUTests.expectNothingLeft(env, "newer", "after down of an unreadable record")
        #expect(env.qemuProcesses().isEmpty)
    }

    /// `down`, and a second `down`, leave no lock file; `list` meets none.
    @Test func downTwiceLeavesNoLockFile() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment(prefix: "qown")
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("twice", tests: "  t: {run: \"true\"}")
        #expect(try env.qlab("up", file).status == 0)
        #expect(FileManager.default.fileExists(atPath: env.runtime("twice").lockPath), "a running lab has its lock file")
        for round in 1...2 {
            let down = try env.qlab("down", "twice")
            #expect(down.status == 0, "\(round): \(down.output)")
            CancellationQEMUTests.expectNothingLeft(env, "twice", "after down \(round)")
        }
        let list = try env.qlab("list")
        #expect(list.stdout.contains("twice") && list.stdout.contains("stopped"), "\(list.output)")
        #expect(!FileManager.default.fileExists(atPath: env.runtime("twice").lockPath))
    }

    /// A `--jobs 2` run whose clone's QEMU is killed mid-test: the run goes on and, when it
    /// ends, leaves no `LAB-j2.lock` (nor anything else).
    @Test func aKilledCloneLeavesNoLockFile() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment(prefix: "qown")
        defer { env.cleanUp() }
        let tests = (1...3).map { "  t\($0): {run: \"echo QLAB-SL''EEPING; sleep 15\", timeout: 120s}" }.joined(separator: "\n")
        let file = try env.writeGuestLab("jobs", tests: tests)
        let run = try BackgroundQLab(env, ["run", file, "--jobs", "2"])
        let clone = env.runtime("jobs-j2")
        #expect(
            waitUntil(limit: .seconds(400)) { CancellationQEMUTests.sleeping(env, "jobs-j2") }, "the clone never ran a test: \(run.stdout)\(run.stderr)")
        let pid = try #require(((try? clone.records.reload()) ?? nil)?.qemuPID)
        #expect(clone.liveQEMU(try #require(try clone.record)) == pid)
        kill(pid, SIGKILL)
        let status = run.finish()
        // The killed clone's entry is an error and the others pass: infrastructure only (exit 5).
        #expect(status == 5, "\(run.stdout)\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: clone.lockPath), "\(clone.lockPath) left")
        CancellationQEMUTests.expectNothingLeft(env, "jobs", "after the run")
        CancellationQEMUTests.expectNothingLeft(env, "jobs-j2", "after the run")
        let list = try env.qlab("list")
        #expect(list.status == 0, "\(list.output)")
    }
}
