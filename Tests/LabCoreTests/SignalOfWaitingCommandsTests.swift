import Foundation
import LabCore
import LabSupervision
import Platform
import Testing

/// SIGINT and SIGTERM of real `qlab` commands while they wait (QEMU 7.2, TCG): the
/// table's exit (130, 143) chosen by qlab, not a death by the signal; no QEMU, socket,
/// lock or runtime dir left that should not be; the lab in the state the docs say.
@Suite("Signals of waiting commands (real QEMU)", .serialized)
struct SignalOfWaitingCommandsTests {
    /// True once `pid` has SIGINT and SIGTERM ignored or caught (qlab's ``SignalTrap`` is in
    /// place): a signal sent before that would end it by the default disposition instead.
    static func trapsSignals(_ pid: Int32) -> Bool {
        guard let status = HostFiles.readText("/proc/\(pid)/status") else { return false }
        var mask: UInt64 = 0
        for line in status.split(separator: "\n") where line.hasPrefix("SigIgn:") || line.hasPrefix("SigCgt:") {
            mask |= UInt64(line.split(separator: "\t").last.map(String.init) ?? "", radix: 16) ?? 0
        }
        return [SIGINT, SIGTERM].allSatisfy { mask & (1 << UInt64($0 - 1)) != 0 }
    }

    /// A firmware-only lab (blank disk) whose guest is never ready: `ready` text that never shows.
    static func neverReadyLab(_ env: QLabTestEnvironment, _ name: String) throws -> String {
        _ = try env.makeBlankDisk()
        return try env.writeLab(name, """
            name: \(name)
            machine: {type: q35, accel: tcg, memory: 64M}
            guests:
              bare: {os: linux, disk: blank.qcow2, ready: never-shown-ready-text, boot_timeout: 900s}
            """)
    }

    /// `qlab up --wait-ready` cancelled while it waits for the guest: 130/143, and the lab stays
    /// up (docs/guest-interaction.md: the lab stays up whether or not its guest gets ready;
    /// `qlab down` takes it down), with no console claim or other command left on it.
    @Test(arguments: [SIGINT, SIGTERM])
    func upWaitReadyCancelledLeavesTheLabUp(signal: Int32) async throws {
        let env = try QLabTestEnvironment(prefix: "qsig")
        defer { env.cleanUp() }
        let file = try Self.neverReadyLab(env, "never")
        let up = try BackgroundQLab(env, ["up", "--wait-ready", file])
        #expect(waitUntil(limit: .seconds(120)) { up.stdout.contains("lab never up:") && Self.trapsSignals(up.pid) }, "\(up.stdout)\(up.stderr)")
        let record = try #require(try env.runtime("never").record)
        #expect(up.signal(signal) == 128 + signal, "\(up.stdout)\(up.stderr)")
        #expect(up.stderr.contains("cancelled by \(signal == SIGINT ? "SIGINT" : "SIGTERM")"), "\(up.stderr)")
        let status = try env.qlab("status", "never")
        #expect(status.stdout.hasPrefix("never: running"), "\(status.output)")
        #expect(env.qemuProcesses() == [record.qemuPID])
        // Its console is free: a command may use it at once (not busy, exit 4).
        let exec = try env.qlab("exec", "never", "--timeout", "1", "--", "true")
        #expect(exec.status != ExitStatus.busy.rawValue, "\(exec.output)")
        #expect(try env.qlab("down", "never").status == 0)
        CancellationQEMUTests.expectNothingLeft(env, "never", "after down")
    }

    /// `qlab keys` cancelled while it waits for a QEMU that does not answer (stopped with
    /// SIGSTOP): 130/143; once QEMU runs again the lab is up and answers, untouched.
    @Test(arguments: [SIGINT, SIGTERM])
    func keysCancelledWhileQEMUDoesNotAnswer(signal: Int32) async throws {
        let env = try QLabTestEnvironment(prefix: "qsig")
        defer { env.cleanUp() }
        let file = try Self.neverReadyLab(env, "keyed")
        #expect(try env.qlab("up", file).status == 0)
        let record = try #require(try env.runtime("keyed").record)
        // Ours: started by this test's `qlab up`, verified by pid and start time.
        let qemu = try #require(env.runtime("keyed").liveQEMU(record))
        kill(qemu, SIGSTOP)
        defer { kill(qemu, SIGCONT) }
        let keys = try BackgroundQLab(env, ["keys", "keyed", "esc"])
        // Waiting: its trap in place and a connection to the lab's QMP socket open.
        #expect(waitUntil(limit: .seconds(60)) { Self.trapsSignals(keys.pid) && Self.hasSocket(keys.pid) }, "\(keys.stdout)\(keys.stderr)")
        #expect(keys.process.isRunning, "keys ended while QEMU was stopped: \(keys.stdout)\(keys.stderr)")
        #expect(keys.signal(signal) == 128 + signal, "\(keys.stdout)\(keys.stderr)")
        kill(qemu, SIGCONT)
        #expect(try env.qlab("status", "keyed").stdout.hasPrefix("keyed: running"))
        let again = try env.qlab("keys", "keyed", "esc")
        #expect(again.status == 0, "\(again.output)")
        #expect(try env.qlab("down", "keyed").status == 0)
        CancellationQEMUTests.expectNothingLeft(env, "keyed", "after down")
    }

    /// `qlab up --wait-ready` cancelled while it presses boot keys and reads the screen for a
    /// text that never shows (``GuestBootWait``, with a QMP session open): 130/143, the lab
    /// stays up, its QMP is free again for the next command, and `down` leaves nothing.
    @Test(arguments: [SIGINT, SIGTERM])
    func upWaitReadyCancelledOnTheScreenLeavesTheLabUp(signal: Int32) async throws {
        let env = try QLabTestEnvironment.withGuestImages(prefix: "qsig")
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("screened", devices: "  {}", tests: #"  t: {run: "true"}"#, extra: "display: vga",
                                         guestExtra: #"    boot_keys: [{press: esc, until: qlab-never-on-screen}]"#)
        let up = try BackgroundQLab(env, ["up", "--wait-ready", file])
        // Pressing and reading: its trap in place, the lab up, and two connections open (the console and QMP).
        #expect(waitUntil(limit: .seconds(120)) { Self.trapsSignals(up.pid) && up.stdout.contains("lab screened up:") && Self.socketCount(up.pid) >= 2 },
                "\(up.stdout)\(up.stderr)")
        #expect(up.process.isRunning, "up ended: \(up.stdout)\(up.stderr)")
        #expect(up.signal(signal) == 128 + signal, "\(up.stdout)\(up.stderr)")
        #expect(try env.qlab("status", "screened").stdout.hasPrefix("screened: running"))
        let qmp = try env.qlab("qmp", "screened", "query-status")
        #expect(qmp.status == 0 && qmp.stdout.contains("running"), "\(qmp.output)")
        #expect(try env.qlab("down", "screened").status == 0)
        CancellationQEMUTests.expectNothingLeft(env, "screened", "after down")
    }

    /// How many sockets `pid` has open.
    static func socketCount(_ pid: Int32) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        return fds.filter { HostFiles.readLink("/proc/\(pid)/fd/\($0)")?.hasPrefix("socket:") == true }.count
    }

    /// Whether `pid` has a socket open.
    static func hasSocket(_ pid: Int32) -> Bool {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        return fds.contains { HostFiles.readLink("/proc/\(pid)/fd/\($0)")?.hasPrefix("socket:") == true }
    }

    /// `qlab health` cancelled while its check (a test of the guest) runs: 130/143, the lab it
    /// booted for the check is down with nothing left, and no health is recorded.
    @Test(arguments: [SIGINT, SIGTERM])
    func healthCancelledDuringItsCheckLeavesNothing(signal: Int32) async throws {
        let env = try QLabTestEnvironment.withGuestImages(prefix: "qsig")
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("checked", devices: "  {}", tests: CancellationQEMUTests.sleeperTests, extra: "health_check: sleeper")
        let health = try BackgroundQLab(env, ["health", file])
        #expect(waitUntil(limit: .seconds(300)) { CancellationQEMUTests.sleeping(env, "checked") }, "the check never started: \(health.stdout)\(health.stderr)")
        #expect(health.signal(signal) == 128 + signal, "\(health.stdout)\(health.stderr)")
        #expect(health.stderr.contains("cancelled by \(signal == SIGINT ? "SIGINT" : "SIGTERM")"), "\(health.stderr)")
        #expect(!health.stdout.contains("health check sleeper: "), "a verdict was recorded: \(health.stdout)")
        #expect(env.qemuProcesses().isEmpty, "\(env.qemuProcesses())")
        CancellationQEMUTests.expectNothingLeft(env, "checked", "after the signal")
        #expect(try env.qlab("status", "checked").stdout.contains("checked: stopped"))
    }

    /// `qlab cards` cancelled while it reads (a sysfs file that blocks: a FIFO in the tree it
    /// is given): it reads only, so it finishes what it reads, then exits 130/143 like every
    /// other command, not by the signal.
    @Test(arguments: [SIGINT, SIGTERM])
    func cardsCancelledWhileReadingExitsAsTheTableSays(signal: Int32) async throws {
        let env = try QLabTestEnvironment(prefix: "qsig")
        defer { env.cleanUp() }
        let tree = try CardReservationTests.benchWithTwoCards()
        let vendor = tree.path("sys/" + (try #require(tree.devicePaths[CardReservationTests.card])) + "/vendor")
        try FileManager.default.removeItem(atPath: vendor)
        #expect(mkfifo(vendor, 0o600) == 0)
        let cards = try BackgroundQLab(env, ["cards", "--device", CardReservationTests.card.description,
            "--sysfs", tree.roots.sysfs, "--procfs", tree.roots.procfs, "--devfs", tree.roots.devfs])
        // The FIFO has a reader (cards is in its open) once a non-blocking open for writing succeeds.
        var writer: Int32 = -1
        #expect(waitUntil(limit: .seconds(60)) {
            writer = open(vendor, O_WRONLY | O_NONBLOCK)
            return writer >= 0
        }, "cards never read the card's vendor file: \(cards.stdout)\(cards.stderr)")
        #expect(Self.trapsSignals(cards.pid), "cards has no signal trap in place while it reads")
        kill(cards.pid, signal)
        // Each time cards opens the file (it reads it more than once), it gets the vendor id.
        #expect(waitUntil(limit: .seconds(120)) {
            if writer < 0 { writer = open(vendor, O_WRONLY | O_NONBLOCK) }
            if writer >= 0 {
                _ = "1000\n".withCString { write(writer, $0, 5) }
                close(writer)
                writer = -1
            }
            return !cards.process.isRunning
        }, "cards did not end after its reads were answered: \(cards.stdout)\(cards.stderr)")
        #expect(cards.finish() == 128 + signal, "\(cards.stdout)\(cards.stderr)")
        #expect(cards.stderr.contains("cancelled by \(signal == SIGINT ? "SIGINT" : "SIGTERM")"), "\(cards.stderr)")
    }
}
