import Foundation
import LabCore
import LabSupervision
import Platform
import QMP
import Testing

/// `qlab up/status/qmp/down` as a user runs them: the built qlab binary,
/// real QEMU under TCG, a private runtime and state dir per test.
@Suite("Lab lifecycle (real QEMU)", .serialized)
struct LifecycleTests {
    static func bareLab(_ env: QLabTestEnvironment, name: String = "bare", extra: String = "") throws -> String {
        _ = try env.makeBlankDisk()
        return try env.writeLab(name, """
            name: \(name)
            machine: {type: q35, accel: tcg, memory: 64M}
            guests:
              bare: {os: linux, disk: blank.qcow2}
            \(extra)
            """)
    }

    static func mode(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions]) as? Int) ?? -1
    }

    @Test func upQueryStatusDownLeavesNothing() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.bareLab(env)
        let up = try env.qlab("up", lab)
        #expect(up.status == 0, "\(up.stderr)")
        #expect(up.stdout.contains("accel tcg"))
        let runtime = env.runtime("bare")
        let record = try #require(try runtime.record)
        #expect(ProcessTable.isRunning(record.qemuPID))
        // QEMU runs as `-name bare`, so ps shows whose it is.
        let argv = ProcessTable.commandLine(record.qemuPID)
        #expect(argv.contains("-name"))
        #expect(argv.contains { $0 == "bare" || $0.hasPrefix("bare,") || $0.hasPrefix("guest=bare") })
        #expect(Self.mode(env.runtimeRoot) == 0o700)
        #expect(Self.mode(runtime.directory) == 0o700)
        #expect(Self.mode(runtime.qmpSocketPath) == 0o600)

        let qmp = try env.qlab("qmp", "bare", "query-status")
        #expect(qmp.status == 0, "\(qmp.stderr)")
        let reply = try JSONValue.parse(qmp.stdout)
        #expect(reply["status"]?.stringValue == "running")

        let status = try env.qlab("status", "bare", "--json")
        let json = try JSONValue.parse(status.stdout)
        #expect(json["state"]?.stringValue == "running")
        #expect(json["qemu_pid"]?.intValue == Int(record.qemuPID))
        #expect(json["accel"]?["accelerator"]?.stringValue == "tcg")

        let down = try env.qlab("down", "bare")
        #expect(down.status == 0, "\(down.stderr)")
        #expect(!ProcessTable.isRunning(record.qemuPID))
        #expect(!ProcessTable.isRunning(record.supervisorPID))
        #expect(!FileManager.default.fileExists(atPath: runtime.qmpSocketPath))
        #expect(!FileManager.default.fileExists(atPath: runtime.directory))
        #expect(!FileManager.default.fileExists(atPath: runtime.lockPath))
        #expect(env.qemuProcesses().isEmpty)
        let after = try JSONValue.parse(try env.qlab("status", "bare", "--json").stdout)
        #expect(after["state"]?.stringValue == "stopped")
        #expect(after["last_exit"]?["requested"]?.boolValue == true)
        // Idempotent.
        let again = try env.qlab("down", "bare")
        #expect(again.status == 0)
        #expect(again.stdout.contains("not running"))
    }

    /// A lab whose QEMU ends by itself (here: `quit` from a client, as a guest
    /// power-off would) leaves nothing behind: no runtime dir, no lock file.
    @Test func qemuEndingByItselfLeavesNoLockFile() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.bareLab(env)
        let up = try env.qlab("up", lab)
        #expect(up.status == 0, "\(up.stderr)")
        let runtime = env.runtime("bare")
        let record = try #require(try runtime.record)
        // A command that took the lock (and let it go) made the lock file.
        #expect(try env.qlab("qmp", "bare", "query-status").status == 0)
        _ = try env.qlab("snapshot", "bare", "list")
        #expect(FileManager.default.fileExists(atPath: runtime.lockPath), "the test needs a lock file to be there first")
        let quit = try env.qlab("qmp", "bare", "quit")
        #expect(quit.status == 0, "\(quit.stderr)")
        #expect(await ProcessTable.waitGone(record.supervisorPID, timeout: .seconds(20)), "the supervisor ends with its QEMU")
        #expect(!ProcessTable.isRunning(record.qemuPID))
        #expect(!FileManager.default.fileExists(atPath: runtime.directory))
        #expect(!FileManager.default.fileExists(atPath: runtime.lockPath))
        let after = try JSONValue.parse(try env.qlab("status", "bare", "--json").stdout)
        #expect(after["state"]?.stringValue == "stopped")
        #expect(env.qemuProcesses().isEmpty)
    }

    @Test func killedQEMUShowsAsCrashedWithTheSignal() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.bareLab(env)
        #expect(try env.qlab("up", lab).status == 0)
        let record = try #require(try env.runtime("bare").record)
        kill(record.qemuPID, SIGKILL)
        _ = await ProcessTable.waitGone(record.supervisorPID, timeout: .seconds(10))
        let status = try JSONValue.parse(try env.qlab("status", "bare", "--json").stdout)
        #expect(status["state"]?.stringValue == "crashed")
        #expect(status["last_exit"]?["signal"]?.intValue == Int(SIGKILL))
        #expect(status["last_exit"]?["signal_name"]?.stringValue == "SIGKILL")
        #expect(env.qemuProcesses().isEmpty)
    }

    @Test func killedSupervisorLeavesNoUnmanagedQEMU() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.bareLab(env)
        #expect(try env.qlab("up", lab).status == 0)
        let record = try #require(try env.runtime("bare").record)
        kill(record.supervisorPID, SIGKILL)
        _ = await ProcessTable.waitGone(record.supervisorPID, timeout: .seconds(5))
        #expect(ProcessTable.isRunning(record.qemuPID))
        let status = try JSONValue.parse(try env.qlab("status", "bare", "--json").stdout)
        #expect(status["state"]?.stringValue == "running")
        #expect(status["supervised"]?.boolValue == false)
        let down = try env.qlab("down", "bare")
        #expect(down.status == 0, "\(down.stderr)")
        #expect(!ProcessTable.isRunning(record.qemuPID))
        #expect(env.qemuProcesses().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: env.runtime("bare").directory))
    }

    /// `up` of a lab that is already up is busy (exit 4), naming QEMU's and the supervisor's
    /// pids and since when the lab runs; the running lab is untouched.
    @Test func secondUpOfARunningLabIsRefused() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.bareLab(env)
        #expect(try env.qlab("up", lab).status == 0)
        let record = try #require(try env.runtime("bare").record)
        let second = try env.qlab("up", lab)
        #expect(second.status == ExitStatus.busy.rawValue, "\(second.output)")
        let named = "lab bare is already running (QEMU pid \(record.qemuPID), supervisor pid \(record.supervisorPID), since \(formatTimestamp(record.startedAt)))"
        #expect(second.stderr.contains(named), "\(second.stderr)")
        #expect(env.qemuProcesses() == [record.qemuPID])
    }

    /// A lab brought up in this process (as `qlab run` and the in-process tests do): its
    /// supervisor is this process's child, and once the lab is down it is reaped, not left
    /// a zombie for as long as this process lives.
    @Test func aSupervisorStartedInProcessIsReapedWhenItEnds() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.bareLab(env)
        let up = try await env.controller.up(labFile: lab, options: .init())
        let supervisor = up.record.supervisorPID
        #expect(ProcessTable.isRunning(supervisor))
        #expect(ProcessIdentity.parent(supervisor) == getpid(), "the supervisor is not this process's child")
        _ = try await env.controller.down("bare")
        // A zombie still exists (kill(pid, 0) succeeds) until its parent reaps it.
        #expect(waitUntil(limit: .seconds(60)) { !ProcessTable.exists(supervisor) }, "supervisor \(supervisor) was not reaped: \(ProcessTable.commandLine(supervisor))")
        #expect(env.qemuProcesses().isEmpty)
    }

    @Test func missingHostDeviceFailsInQEMUWithADiagnosis() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        // An address no machine here has; --force skips the doctor so QEMU itself fails.
        let lab = try Self.bareLab(env, name: "ghost", extra: """
            devices:
              scsi0:
                passthrough: {host: "0000:7e:1f.7"}
                attach: boot
            """)
        let refused = try env.qlab("up", lab)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("device-present"))
        #expect(env.qemuProcesses().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: env.runtime("ghost").lockPath))

        let forced = try env.qlab("up", "--force", lab)
        #expect(forced.status == 1)
        #expect(forced.stderr.contains("QEMU said:"))
        #expect(forced.stderr.contains("0000:7e:1f.7"))
        #expect(forced.stderr.contains("vfio-no-host-device"))
        #expect(env.qemuProcesses().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: env.runtime("ghost").directory))
        #expect(!FileManager.default.fileExists(atPath: env.runtime("ghost").lockPath))
        let status = try JSONValue.parse(try env.qlab("status", "ghost", "--json").stdout)
        #expect(status["state"]?.stringValue == "crashed")
        #expect((status["last_exit"]?["diagnoses"]?.arrayValue?.count ?? 0) > 0)
    }

    @Test func badLabFilesAndNamesGiveClearErrors() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        _ = try env.makeBlankDisk()
        let badKey = try env.writeLab("badkey", """
            name: badkey
            machine: {type: q35, memroy: 64M}
            guests:
              bare: {os: linux, disk: blank.qcow2}
            """)
        let result = try env.qlab("up", badKey)
        #expect(result.status == 2)
        #expect(result.stderr.contains("badkey.yaml:2"))
        #expect(result.stderr.contains("memroy"))

        let badName = try env.writeLab("badname", """
            name: Bad_Name
            guests:
              bare: {os: linux, disk: blank.qcow2}
            """)
        let nameResult = try env.qlab("up", badName)
        #expect(nameResult.status == 2)
        #expect(nameResult.stderr.contains("name"))

        let missing = try env.writeLab("missing", """
            name: missing
            guests:
              bare: {os: linux, disk: nowhere.qcow2}
            """)
        let missingResult = try env.qlab("up", missing)
        #expect(missingResult.status == 2)
        #expect(missingResult.stderr.contains("nowhere.qcow2"))
        #expect(env.qemuProcesses().isEmpty)

        // Issue 10's exit-code table: a name with no record is "no such lab", exit 3.
        let unknown = try env.qlab("status", "no-such-lab", "--json")
        #expect(unknown.status == ExitStatus.noSuchLab.rawValue)
        #expect(unknown.stderr.contains("no such lab no-such-lab"))
        let qmp = try env.qlab("qmp", "no-such-lab", "query-status")
        #expect(qmp.status == ExitStatus.noSuchLab.rawValue)
        #expect(qmp.stderr.contains("no such lab"))
    }

    @Test func foregroundTakesQEMUDownOnSIGTERM() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.bareLab(env)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: QLabTestEnvironment.qlabExecutable)
        process.arguments = ["up", "--foreground", lab]
        process.environment = env.environment
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.interrupt() } }
        let runtime = env.runtime("bare")
        var pid: Int32?
        for _ in 0..<500 {
            if let record = try runtime.record, record.qemuPID > 0, FileManager.default.fileExists(atPath: runtime.qmpSocketPath) {
                pid = record.qemuPID
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let qemu = try #require(pid)
        #expect(try env.qlab("qmp", "bare", "query-status").status == 0)
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        // Cancelled by SIGTERM: 143 (ExitStatus.cancelled(by:)), after taking QEMU down.
        #expect(process.terminationReason == .exit && process.terminationStatus == 143)
        #expect(!ProcessTable.isRunning(qemu))
        #expect(runtime.exitRecord?.requested == true)
        #expect(env.qemuProcesses().isEmpty)
    }

    @Test func aHostDeviceHeldByOneLabIsRefusedToAnother() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        // Hotplug: QEMU starts without the card, but the lab holds it.
        let card = """
            devices:
              scsi0:
                passthrough: {host: "0000:7e:1f.7"}
                attach: hotplug
            """
        let first = try Self.bareLab(env, name: "holder", extra: card)
        let second = try env.writeLab("taker", """
            name: taker
            machine: {type: q35, accel: tcg, memory: 64M}
            guests:
              bare: {os: linux, disk: blank.qcow2}
            \(card)
            """)
        #expect(try env.qlab("up", "--force", first).status == 0)
        // The card is reserved by the first lab's supervisor (docs/cards.md): busy, naming it.
        let refused = try env.qlab("up", "--force", second)
        #expect(refused.status == ExitStatus.busy.rawValue, "\(refused.output)")
        #expect(refused.stderr.contains("card 0000:7e:1f.7 is reserved by lab holder ("), "\(refused.stderr)")
        #expect(env.qemuProcesses().count == 1)
    }
}
