import Foundation
import LabCore
import Platform
import QMP
import Testing

/// Runs that cannot go on, said at once and once: a guest that panics, resets
/// or shuts down during a test (QEMU's events), and a lab that cannot be launched.
@Suite("Runs that break (real QEMU)", .serialized)
struct RunBreakageTests {
    /// `echo c > /proc/sysrq-trigger`: GUEST_PANICKED from the linux profile's
    /// pvpanic device ends the run at once as an error with the panic line, the
    /// tail from it; `reboot -f` is a reset; the guest restarts and the next test passes.
    @Test func aGuestPanicOrResetDuringATestIsAnErrorAtOnce() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try env.writeGuestLab("panic", devices: "  {}", tests: """
              driver: {run: "ls /sys/bus/platform/drivers/pvpanic-mmio/", expect: QEMU0001}
              panic: {run: "echo c > /proc/sysrq-trigger", timeout: 300s}
              reboot: {run: "reboot -f", timeout: 300s}
              after: {run: "uname -s", expect: Linux}
            """)
        let run = try env.qlab("run", lab, "--json-report", env.root + "/r.json")
        // Errors and no failed test: exit 5 (infrastructure), the one table's row for it.
        #expect(run.status == ExitStatus.infrastructure.rawValue, "\(run.output)")
        let report = try TestReport(path: env.root + "/r.json")
        let results = report.results.filter { !$0.isBoot }
        #expect(results.map(\.outcome) == [.passed, .error, .error, .passed], "\(run.output)")
        guard results.count == 4 else { return }
        // An error, not a timeout: the events said so long before the 300 s.
        #expect(results[1].message == "guest panicked during the test: Kernel panic - not syncing: sysrq triggered crash", "\(results[1].message)")
        #expect(results[1].consoleTail.split(separator: "\n").first?.contains("Kernel panic - not syncing: sysrq triggered crash") == true, "\(results[1].consoleTail)")
        #expect(results[1].consoleTail.contains("Call Trace:"))
        #expect(results[2].message == "guest reset during the test (guest-reset)", "\(results[2].message)")
        #expect(run.stdout.contains("note: restarting guest linux after error in panic"), "\(run.stdout)")
        #expect(env.qemuProcesses().isEmpty)
    }

    /// A disk image that does not exist: exit 2 before any boot, the error once, nothing left behind.
    @Test func aLabThatCannotBeLaunchedIsBadInputBeforeAnyBoot() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try env.writeLab("nodisk", """
            name: nodisk
            machine: {type: q35, accel: tcg, memory: 128M}
            guests:
              linux: {os: linux, kernel: \(QLabTestEnvironment.imagesOut)/linux/vmlinuz, disk: \(env.root)/missing.qcow2}
            tests:
              a: {run: "true"}
              b: {run: "true"}
            """)
        let run = try env.qlab("run", lab, "--json-report", env.root + "/r.json")
        #expect(run.status == ExitStatus.usage.rawValue, "\(run.output)")
        let line = "\(lab):4:\(try #require(Self.column(of: "disk:", in: lab)) + 6): guests.linux.disk: \(env.root)/missing.qcow2 does not exist; fix the path (relative paths are relative to the lab file)"
        #expect(run.stderr.components(separatedBy: "missing.qcow2 does not exist").count - 1 == 1, "said once: \(run.output)")
        #expect(run.stderr.contains(line), "\(run.stderr)")
        #expect(!run.output.contains("did not boot"), "\(run.output)")
        #expect(!FileManager.default.fileExists(atPath: env.root + "/r.json"), "no report of a run that did not start")
        #expect(!FileManager.default.fileExists(atPath: env.runtimeRoot + "/nodisk"))
        #expect(try env.qlab("up", lab).status == ExitStatus.usage.rawValue, "up says the same")
    }

    /// The 1-based column of `key` on line 4 of `path`.
    static func column(of key: String, in path: String) -> Int? {
        let lines = (try? String(contentsOfFile: path, encoding: .utf8))?.components(separatedBy: "\n") ?? []
        guard lines.count >= 4, let range = lines[3].range(of: key) else { return nil }
        return lines[3].distance(from: lines[3].startIndex, to: range.lowerBound) + 1
    }
}
