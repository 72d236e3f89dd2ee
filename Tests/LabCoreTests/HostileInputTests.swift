import Foundation
import LabCore
import QMP
import Testing

/// Input that used to crash or hang qlab, or let QEMU slip out of its
/// supervision: each is refused at once with FILE:LINE:COL and the key, or a
/// usage error (exit 2).
@Suite("Hostile input is refused")
struct HostileInputTests {
    struct Refused: CustomStringConvertible, Sendable {
        var title: String
        var yaml: String
        var line: Int
        var column: Int
        var keyPath: String
        var message: String
        var description: String { title }
    }

    static let guest = "guests:\n  g:\n    os: linux\n    kernel: /bin/sh\n"

    static let refused: [Refused] = [
        // Options qlab owns, in every spelling QEMU reads.
        Refused(title: "-daemonize", yaml: "name: t\n\(guest)qemu_args: [-daemonize]\n", line: 6, column: 13, keyPath: "qemu_args[0]", message: "-daemonize is qlab's to give"),
        Refused(title: "--daemonize", yaml: "name: t\n\(guest)qemu_args: [-m, 64M, --daemonize]\n", line: 6, column: 22, keyPath: "qemu_args[2]", message: "-daemonize is qlab's to give"),
        Refused(title: "-pidfile=", yaml: "name: t\n\(guest)qemu_args:\n  - -pidfile=/tmp/x.pid\n", line: 7, column: 5, keyPath: "qemu_args[0]", message: "-pidfile is qlab's to give"),
        Refused(title: "-name", yaml: "name: t\n\(guest)qemu_args: [-name, other]\n", line: 6, column: 13, keyPath: "qemu_args[0]", message: "-name is qlab's"),
        Refused(title: "-qmp", yaml: "name: t\n\(guest)qemu_args: [-qmp, \"tcp:0.0.0.0:4444,server=on\"]\n", line: 6, column: 13, keyPath: "qemu_args[0]", message: "-qmp is qlab's"),
        Refused(title: "-qmp-pretty", yaml: "name: t\n\(guest)qemu_args: [-qmp-pretty, unix:/tmp/q]\n", line: 6, column: 13, keyPath: "qemu_args[0]", message: "-qmp-pretty is qlab's"),
        Refused(title: "-monitor", yaml: "name: t\n\(guest)qemu_args: [-monitor, stdio]\n", line: 6, column: 13, keyPath: "qemu_args[0]", message: "-monitor is qlab's"),
        Refused(title: "-mon", yaml: "name: t\n\(guest)qemu_args: [-mon, chardev=c0]\n", line: 6, column: 13, keyPath: "qemu_args[0]", message: "-mon is qlab's"),
        Refused(title: "-runas", yaml: "name: t\n\(guest)qemu_args: [-runas, nobody]\n", line: 6, column: 13, keyPath: "qemu_args[0]", message: "-runas is qlab's"),
        Refused(title: "guest -chroot", yaml: "name: t\nguests:\n  g:\n    os: linux\n    kernel: /bin/sh\n    qemu_args: [-chroot, /var/empty]\n", line: 6, column: 17, keyPath: "guests.g.qemu_args[0]", message: "-chroot is qlab's"),
        Refused(
            title: "chardev with qlab's id", yaml: "name: t\n\(guest)qemu_args: [-chardev, \"socket,id=qlab-console,path=/tmp/c\"]\n",
            line: 6, column: 23, keyPath: "qemu_args[1]", message: "'qlab-console' is one of qlab's own ids"),
        Refused(
            title: "serial on qlab's console", yaml: "name: t\n\(guest)qemu_args: [-serial, \"chardev:qlab-console\"]\n",
            line: 6, column: 13, keyPath: "qemu_args[0]", message: "uses one of qlab's chardevs"),
        Refused(
            title: "monitor on every interface", yaml: "name: t\n\(guest)qemu_args: [-serial, \"mon:tcp::4444,server=on\"]\n",
            line: 6, column: 13, keyPath: "qemu_args[0]", message: "puts a monitor on the network (every interface)"),
        Refused(
            title: "monitor on a public address", yaml: "name: t\n\(guest)qemu_args: [-serial, \"mon:telnet:192.0.2.1:4444,server=on\"]\n",
            line: 6, column: 13, keyPath: "qemu_args[0]", message: "puts a monitor on the network (192.0.2.1)"),
        // Numbers that used to trap in a Duration conversion.
        Refused(title: "duration 1e300", yaml: "name: t\nguests: {g: {os: linux, kernel: /bin/sh, boot_timeout: 1e300}}\n", line: 2, column: 56, keyPath: "guests.g.boot_timeout", message: "not a duration"),
        Refused(title: "duration inf", yaml: "name: t\nguests: {g: {os: linux, kernel: /bin/sh, boot_timeout: inf}}\n", line: 2, column: 56, keyPath: "guests.g.boot_timeout", message: "not a duration"),
        Refused(
            title: "duration 99999999999999h", yaml: "name: t\n\(guest)tests:\n  t1: {run: ls, timeout: 99999999999999h}\n",
            line: 7, column: 26, keyPath: "tests.t1.timeout", message: "is more than a week"),
        Refused(title: "zero timeout", yaml: "name: t\n\(guest)hooks: {timeout: 0s}\n", line: 6, column: 18, keyPath: "hooks.timeout", message: "must be more than 0"),
        Refused(title: "zero bare timeout", yaml: "name: t\n\(guest)tests:\n  t1: {run: ls, timeout: 0}\n", line: 7, column: 26, keyPath: "tests.t1.timeout", message: "must be more than 0"),
        Refused(title: "negative timeout", yaml: "name: t\n\(guest)tests:\n  t1: {run: ls, timeout: -5s}\n", line: 7, column: 26, keyPath: "tests.t1.timeout", message: "not a duration"),
        Refused(title: "huge smp", yaml: "name: t\nmachine: {smp: 99999999999999999999}\n\(guest)", line: 2, column: 16, keyPath: "machine.smp", message: "whole number"),
        // Image paths that are not files.
        Refused(title: "kernel is /dev/zero", yaml: "name: t\nguests: {g: {os: linux, kernel: /dev/zero}}\n", line: 2, column: 33, keyPath: "guests.g.kernel", message: "/dev/zero is a character device"),
        Refused(title: "initrd is a directory", yaml: "name: t\nguests: {g: {os: linux, kernel: /bin/sh, initrd: /tmp}}\n", line: 2, column: 50, keyPath: "guests.g.initrd", message: "/tmp is a directory"),
    ]

    @Test(arguments: refused)
    func refusedWithLineAndKey(_ bad: Refused) throws {
        let error = try #require(try LabFixtures.loadError(bad.yaml), "accepted: \(bad.title)")
        #expect(error.line == bad.line, "\(error)")
        #expect(error.column == bad.column, "\(error)")
        #expect(error.keyPath == bad.keyPath, "\(error)")
        #expect(error.message.contains(bad.message), "\(error)")
        #expect(error.description.hasPrefix("\(error.file):\(bad.line):\(bad.column): \(bad.keyPath): "), "\(error)")
    }

    @Test func qemuArgsThatAreNotQLabsAreKept() throws {
        let dir = try LabTempDirectory("args")
        defer { dir.remove() }
        let lab = try Lab.load(path: try dir.write("t.yaml", """
            name: t
            \(Self.guest)qemu_args: [-device, "e1000,id=mynic", -serial, "mon:tcp:127.0.0.1:4444,server=on,wait=off", -serial, "mon:unix:/tmp/m,server=on", -no-reboot]
            """))
        #expect(lab.qemuArgs.count == 7)
    }

    @Test func fifoImageIsRefusedWithoutOpeningIt() throws {
        let dir = try LabTempDirectory("fifo")
        defer { dir.remove() }
        let fifo = dir.path + "/disk.qcow2"
        #expect(mkfifo(fifo, 0o600) == 0)
        // Opening the FIFO to sniff its format would block here for ever.
        let error = try #require(try LabFixtures.loadError("name: t\nguests:\n  g: {os: linux, disk: \(fifo)}\n"))
        #expect(error.line == 3)
        #expect(error.keyPath == "guests.g.disk")
        #expect(error.message.contains("is a FIFO"), "\(error)")
        let device = try #require(try LabFixtures.loadError("name: t\ndevices:\n  d:\n    emulated: {driver: am53c974, disks: [\(fifo)]}\n\(Self.guest)"))
        #expect(device.keyPath == "devices.d.emulated.disks[0]", "\(device)")
        #expect(device.message.contains("is a FIFO"), "\(device)")
        // A FIFO as the lab file itself.
        let labFifo = dir.path + "/lab.yaml"
        #expect(mkfifo(labFifo, 0o600) == 0)
        #expect(throws: LabFileError.self) { try Lab.load(path: labFifo) }
    }

    /// 500 bytes that expand to 9^9 nodes under complex keys: Yams would
    /// hash them for minutes; the event pre-scan refuses them at once.
    @Test func aliasBombIsRefused() throws {
        var lines = ["b0: &b0 [x, x, x, x, x, x, x, x, x]"]
        for level in 1...8 {
            lines.append("? &b\(level) [" + Array(repeating: "*b\(level - 1)", count: 9).joined(separator: ", ") + "]\n: v\(level)")
        }
        let error = try #require(try LabFixtures.loadError(lines.joined(separator: "\n") + "\nname: t\n"))
        #expect(error.message.contains("expands to more than 100000 nodes"), "\(error)")
        #expect(error.line == 10, "\(error)")  // b5's key, where the count crosses the limit

        let deep = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        let nested = try #require(try LabFixtures.loadError("name: t\nx: \(deep)\n"))
        #expect(nested.message.contains("nests deeper than 100"), "\(nested)")

        // Ordinary anchors and aliases still work.
        let dir = try LabTempDirectory("alias")
        defer { dir.remove() }
        let lab = try Lab.load(path: try dir.write("t.yaml", """
            name: t
            machine: &m {memory: 128M}
            guests:
              a: {os: linux, kernel: /bin/sh, machine: *m}
              b: {os: linux, kernel: /bin/sh, machine: *m}
            """))
        #expect(lab.guests.map { lab.machineSettings(for: $0).memory } == [.mebibytes(128), .mebibytes(128)])
    }

    @Test func checkedNumbers() throws {
        #expect(LabDuration.parse("1m30s") == .seconds(90))
        #expect(LabDuration.parse("168h") == .seconds(7 * 24 * 3600))
        for bad in ["169h", "1e300", "inf", "nan", "99999999999999h", "0", "0s", "0ms", "-1", ""] {
            #expect(LabDuration.parse(bad) == nil, "\(bad)")
        }
        #expect(try UserNumbers.seconds(2.5).get() == .milliseconds(2500))
        #expect(try UserNumbers.seconds(0, allowZero: true).get() == .zero)
        for bad in [Double.infinity, -.infinity, .nan, 1e300, 1e19, 0, -1, 0.0001, 604_801] {
            #expect(throws: UserNumbers.Refusal.self, "\(bad)") { try UserNumbers.seconds(bad).get() }
        }
        #expect(throws: UserNumbers.Refusal.self) { try UserNumbers.count(0, in: 1...10).get() }
    }

    @Test func commandLineNumbersAreUsageErrors() throws {
        for value in ["inf", "nan", "1e300", "0", "-1"] {
            let result = try CommandLineCLITests.run(["qmp", "--socket", "/nonexistent/qmp.sock", "--timeout=\(value)", "query-status"])
            #expect(result.status == 2, "\(value): \(result.err)")
            #expect(result.err.hasPrefix("Error: --timeout "), "\(value): \(result.err)")
            #expect(result.err.contains("Usage: qlab qmp "), "the usage of the command given: \(value): \(result.err)")
        }
        let exec = try CommandLineCLITests.run(["exec", "nosuchlab", "--timeout", "1e19", "--", "true"])
        #expect(exec.status == 2, "\(exec.err)")
        #expect(exec.err.contains("--timeout 1e+19 seconds is more than a week"), "\(exec.err)")
        let unplug = try CommandLineCLITests.run(["unplug", "nosuchlab", "dev", "--timeout", "inf"])
        #expect(unplug.status == 2, "\(unplug.err)")
        let repeats = try CommandLineCLITests.run(["run", LabFixtures.emulatedLab, "--repeat", "1000000000000"])
        #expect(repeats.status == 2, "\(repeats.err)")
        #expect(repeats.err.contains("--repeat 1000000000000 is out of range"), "\(repeats.err)")
        let shard = try CommandLineCLITests.run(["run", LabFixtures.emulatedLab, "--shard", "1/9999999999"])
        #expect(shard.status == 2, "\(shard.err)")
    }

    /// Numbers in JSON that qlab reads back (a run report to merge) that do
    /// not fit the field: the value is dropped, not trapped on.
    @Test func outOfRangeNumbersInAReportAreNoCrash() throws {
        let dir = try LabTempDirectory("report")
        defer { dir.remove() }
        let report = try dir.write("r.json", """
            {"lab": "x", "started_at": 1e300, "duration_seconds": 1e308, "shards": ["1/1"], "results": [{"guest": "g", "test": "t", \
            "repeat": 1, "matrix_index": 0, "outcome": "passed", "duration_seconds": 1e308, "exit_status": 99999999999}]}
            """)
        let merged = try CommandLineCLITests.run(["report", "merge", report, "--junit", dir.path + "/j.xml"])
        #expect(merged.status == 0, "\(merged.err)")
        #expect(try JSONValue.parse(merged.out)["results"]?[0]?["exit_status"] == .null)
    }
}
