import Foundation
import LabCore
import Platform
import QMP
import Testing

/// QEMU is never left untracked: options that would detach or hide it are
/// refused, a failed `up` leaves no QEMU whatever died when, device records
/// agree with QEMU after a killed command, and no pid from a record is
/// signalled unless it is still the process qlab started (real QEMU, TCG).
@Suite("QEMU is never left untracked (real QEMU)", .serialized)
struct TrackingTests {
    /// Processes whose command line names this environment's runtime root
    /// (QEMU, or a wrapper script standing in for it).
    static func processesUsing(_ env: QLabTestEnvironment) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            ProcessTable.isRunning(pid) && ProcessTable.commandLine(pid).contains { $0.contains(env.runtimeRoot) }
        }
    }

    @Test func daemonizeIsRefusedAndNothingStarts() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        _ = try env.makeBlankDisk()
        let lab = try env.writeLab("daemon", """
            name: daemon
            machine: {type: q35, accel: tcg, memory: 64M}
            guests:
              bare: {os: linux, disk: blank.qcow2}
            qemu_args: [-daemonize]
            """)
        let up = try env.qlab("up", lab)
        #expect(up.status == 2, "\(up.output)")
        #expect(up.stderr.contains("\(lab):5:13: qemu_args[0]: -daemonize is qlab's to give"), "\(up.stderr)")
        #expect(Self.processesUsing(env).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: env.runtime("daemon").directory))
    }

    /// The supervisor dies after starting QEMU (its pid and start time are in
    /// the record) but before QEMU's monitor answered: `up` fails and kills it.
    /// QEMU is a wrapper script that waits before exec'ing qemu-system-x86_64
    /// (the same pid), so it cannot answer before the kill.
    @Test func supervisorKilledDuringUpLeavesNoQEMU() async throws {
        let env = try QLabTestEnvironment()
        defer {
            // Whatever this test's qlab left (nothing, unless it fails): the wrapper too.
            for pid in Self.processesUsing(env) { kill(pid, SIGKILL) }
            env.cleanUp()
        }
        let wrapper = env.labDirectory + "/slow-qemu"
        // It never starts QEMU here (no `go` file); it gives up after a while on its own.
        try """
            #!/bin/sh
            n=0
            while [ ! -e "\(env.labDirectory)/go" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n + 1)); done
            [ -e "\(env.labDirectory)/go" ] || exit 1
            exec qemu-system-x86_64 "$@"

            """.write(toFile: wrapper, atomically: true, encoding: .utf8)
        chmod(wrapper, 0o755)
        _ = try env.makeBlankDisk()
        let lab = try env.writeLab("slow", """
            name: slow
            qemu: \(wrapper)
            machine: {type: q35, accel: tcg, memory: 64M}
            guests:
              bare: {os: linux, disk: blank.qcow2}
            """)
        let up = Process()
        up.executableURL = URL(fileURLWithPath: QLabTestEnvironment.qlabExecutable)
        up.arguments = ["up", lab]
        up.environment = env.environment
        let errors = Pipe()
        up.standardError = errors
        up.standardOutput = FileHandle.nullDevice
        try up.run()
        defer { if up.isRunning { up.terminate() } }

        let runtime = env.runtime("slow")
        var record: LabRecord?
        for _ in 0..<2000 where record == nil {
            record = try runtime.record
            if record == nil { try await Task.sleep(for: .milliseconds(10)) }
        }
        let launched = try #require(record, "the supervisor never wrote the lab record")
        #expect(ProcessTable.commandLine(launched.supervisorPID).contains("_supervise"))
        #expect(ProcessTable.isRunning(launched.qemuPID))
        #expect(launched.qemuStartTime != nil && launched.supervisorStartTime != nil)
        kill(launched.supervisorPID, SIGKILL)

        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        up.waitUntilExit()
        #expect(up.terminationStatus == 1, "\(stderr)")
        #expect(stderr.contains("the supervisor ended before QEMU answered"), "\(stderr)")
        #expect(stderr.contains("its QEMU (pid \(launched.qemuPID)) was killed"), "\(stderr)")
        #expect(!ProcessTable.isRunning(launched.qemuPID))
        #expect(Self.processesUsing(env).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: runtime.directory))
        #expect(!FileManager.default.fileExists(atPath: runtime.lockPath))
        let down = try env.qlab("down", "slow")
        #expect(down.stdout.contains("is not running"), "\(down.output)")
    }

    /// A record whose pids now name another process (the lab's QEMU and
    /// supervisor died unseen and the pid was reused): `down` and `status`
    /// leave it alone. The process even has the lab's QMP socket path and
    /// `_supervise` on its command line, so only the start time recorded at
    /// launch tells it from the lab's QEMU and supervisor.
    @Test func reusedRecordPidIsNotSignalled() async throws {
        let name = "reused"
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let runtime = env.runtime(name)
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        sleeper.arguments = ["-c", "import time; time.sleep(600)", runtime.qmpSocketPath, "_supervise", runtime.launchSpecPath]
        try sleeper.run()
        defer {
            kill(sleeper.processIdentifier, SIGKILL)
            sleeper.waitUntilExit()
        }
        let pid = sleeper.processIdentifier
        let started = try #require(ProcessIdentity.startTime(pid))
        do {
            let startTime = started + 1
            try FileManager.default.createDirectory(atPath: runtime.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            chmod(env.runtimeRoot, 0o700)
            var record = LabRecord(
                name: name, labFile: "/nonexistent.yaml", guest: "g", qemuPID: pid, supervisorPID: pid, foreground: false,
                startedAt: wallClockSeconds(), accel: AccelDecision(.tcg, reason: "test"), consoleLog: nil,
                devices: [], passthroughHosts: [], qemuLogOffset: 0)
            record.qemuStartTime = startTime
            record.supervisorStartTime = startTime
            try FileSystem.writeJSON(runtime.recordPath, record.json)

            let status = try JSONValue.parse(try env.qlab("status", name, "--json").stdout)
            #expect(status["state"]?.stringValue == "stopped", "\(name)")
            let down = try env.qlab("down", name)
            #expect(down.status == 0, "\(name): \(down.output)")
            #expect(down.stdout.contains("QEMU was already gone"), "\(name): \(down.output)")
            #expect(sleeper.isRunning, "\(name): qlab down signalled a process it did not start")
            #expect(ProcessIdentity.startTime(pid) == started)
            #expect(!FileManager.default.fileExists(atPath: runtime.directory))
        }
    }

    /// `up` names both processes it started.
    @Test func upPrintsQEMUAndSupervisorPids() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try LifecycleTests.bareLab(env)
        let up = try env.qlab("up", lab)
        #expect(up.status == 0, "\(up.output)")
        let record = try #require(try env.runtime("bare").record)
        #expect(record.qemuPID != record.supervisorPID)
        #expect(up.stdout.contains("QEMU pid \(record.qemuPID), supervisor pid \(record.supervisorPID)"), "\(up.stdout)")
        #expect(ProcessIdentity.matches(record.qemuPID, startTime: record.qemuStartTime))
        let status = try env.qlab("status", "bare")
        #expect(status.stdout.contains("QEMU pid \(record.qemuPID) (supervisor pid \(record.supervisorPID))"), "\(status.stdout)")
        let json = try JSONValue.parse(try env.qlab("status", "bare", "--json").stdout)
        #expect(json["supervisor_pid"]?.intValue == Int(record.supervisorPID))
        let again = try env.qlab("up", lab)
        // A lab already up is busy (exit 4), and the message names its QEMU and supervisor.
        #expect(again.status == ExitStatus.busy.rawValue, "\(again.output)")
        #expect(again.stderr.contains("(QEMU pid \(record.qemuPID), supervisor pid \(record.supervisorPID), since "), "\(again.stderr)")
    }

    /// The devices QEMU has (`/machine/peripheral`) and the record's view.
    static func states(_ fixture: DeviceLabFixture, _ lab: String) throws -> (record: String?, inQEMU: Bool) {
        let reply = try fixture.qlab("qmp", lab, "qom-list", #"{"path": "/machine/peripheral"}"#)
        let ids = try JSONValue.parse(reply.stdout).arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
        let record = try fixture.runtime(lab).record?.devices.first { $0.name == "scsi-am" }?.state.rawValue
        return (record, ids.contains("scsi-am"))
    }

    /// A device command that dies between its QMP step and its record write
    /// (simulated exactly, then real SIGKILLs at several moments of a
    /// snapshot save) leaves a record that the next command makes agree with
    /// QEMU, and that next command works.
    @Test func killedDeviceCommandsLeaveARecordThatAgrees() async throws {
        guard DeviceLabFixture.haveGuestImages else { return }
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let lab = try fixture.bareLab()
        _ = try await fixture.controller.up(labFile: lab, options: LabController.UpOptions(paused: true))
        #expect(try fixture.qlab("hotplug", "bare-dev", "scsi-am").status == 0)

        // What an unplug killed after QEMU let the card go leaves: QEMU without it, the record saying hotplug.
        #expect(try fixture.qlab("qmp", "bare-dev", "device_del", #"{"id": "scsi-am"}"#).status == 0)
        #expect(try fixture.qlab("qmp", "bare-dev", "system_reset").status == 0)
        var inQEMU = true
        for _ in 0..<500 where inQEMU {
            inQEMU = try Self.states(fixture, "bare-dev").inQEMU
            if inQEMU { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(!inQEMU)
        #expect(try Self.states(fixture, "bare-dev").record == "hotplug")
        let list = try fixture.qlab("snapshot", "list", "bare-dev")
        #expect(list.status == 0, "\(list.output)")
        #expect(try Self.states(fixture, "bare-dev").record == "detached")
        let hotplug = try fixture.qlab("hotplug", "bare-dev", "scsi-am")
        #expect(hotplug.status == 0, "\(hotplug.output)")
        #expect(try Self.states(fixture, "bare-dev") == ("hotplug", true))

        // Real kills of a snapshot save (unplug, save, plug back) at several moments.
        for delay in [30, 150, 400, 1000] {
            let save = Process()
            save.executableURL = URL(fileURLWithPath: QLabTestEnvironment.qlabExecutable)
            save.arguments = ["snapshot", "save", "bare-dev", "k", "--replace", "--reset-fallback"]
            save.environment = fixture.environment
            save.standardOutput = FileHandle.nullDevice
            save.standardError = FileHandle.nullDevice
            try save.run()
            try await Task.sleep(for: .milliseconds(delay))
            kill(save.processIdentifier, SIGKILL)
            save.waitUntilExit()

            let next = try fixture.qlab("snapshot", "save", "bare-dev", "k", "--replace", "--reset-fallback")
            #expect(next.status == 0, "after a kill at \(delay) ms: \(next.output)")
            let (record, present) = try Self.states(fixture, "bare-dev")
            #expect(record == (present ? "hotplug" : "detached"), "after a kill at \(delay) ms: record \(record ?? "none"), QEMU has it: \(present)")
            if !present { #expect(try fixture.qlab("hotplug", "bare-dev", "scsi-am").status == 0) }
        }
    }

    /// A base image changed under a kept guest overlay is noticed at `up`.
    @Test func changedBaseImageIsRefused() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try LifecycleTests.bareLab(env)
        #expect(try env.qlab("up", lab).status == 0)
        #expect(try env.qlab("down", "bare").status == 0)
        #expect(try env.qlab("up", lab).status == 0, "an unchanged base is reused")
        #expect(try env.qlab("down", "bare").status == 0)

        // A new image put in the base's place (another inode, size and time).
        try FileManager.default.removeItem(atPath: env.labDirectory + "/blank.qcow2")
        _ = try env.makeBlankDisk(size: "32M")
        let refused = try env.qlab("up", lab)
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.stderr.contains("base image \(env.labDirectory)/blank.qcow2 changed after the overlay"), "\(refused.stderr)")
        #expect(refused.stderr.contains("qlab up --fresh-disk"), "\(refused.stderr)")
        #expect(Self.processesUsing(env).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: env.runtime("bare").directory))

        let fresh = try env.qlab("up", lab, "--fresh-disk")
        #expect(fresh.status == 0, "\(fresh.output)")
    }

    /// Guest memory above the host's RAM + swap (read from a --procfs tree) is refused before launch.
    @Test func memoryBeyondTheHostIsRefused() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let procfs = env.root + "/proc"
        try FileManager.default.createDirectory(atPath: procfs, withIntermediateDirectories: true)
        try "MemTotal:        1024000 kB\nMemFree:          512000 kB\nSwapTotal:        1024000 kB\n".write(toFile: procfs + "/meminfo", atomically: true, encoding: .utf8)
        let lab = try LifecycleTests.bareLab(env, extra: "")
        let text = try String(contentsOfFile: lab, encoding: .utf8).replacingOccurrences(of: "memory: 64M", with: "memory: 4G")
        try text.write(toFile: lab, atomically: true, encoding: .utf8)
        let controller = LabController(
            supervisorExecutable: QLabTestEnvironment.qlabExecutable, environment: env.environment, hostRoots: HostRoots(procfs: procfs))
        do {
            _ = try await controller.up(labFile: lab, options: LabController.UpOptions())
            Issue.record("4G was accepted on a host with 2000000 KiB of RAM + swap")
        } catch let error as LabFileError {
            #expect(error.keyPath == "machine.memory", "\(error)")
            #expect(error.message.contains("4G is more than this host can ever give"), "\(error)")
        }
        #expect(Self.processesUsing(env).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: env.runtime("bare").directory))
    }
}
