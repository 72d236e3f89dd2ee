import Foundation
import LabCore
import Platform
import QMP
import Testing

/// One vocabulary in the summary line, the JSON report and JUnit; console
/// text without qlab's framing. No QEMU.
@Suite("Reports that agree")
struct ReportAgreementTests {
    static func oneOfEach() -> TestReport {
        func entry(_ test: String, _ index: Int, repeatIndex: Int = 1) -> TestRunEntry {
            TestRunEntry(guest: "linux", test: test, repeatIndex: repeatIndex, matrixIndex: index)
        }
        let results = [
            TestResult(entry: entry("ok", 0), outcome: .passed, duration: 1.25, exitStatus: 0, output: "fine"),
            TestResult(entry: entry("wrong", 1), outcome: .failed, duration: 2, exitStatus: 1, message: "exit status 1 (expected 0)",
                       consoleTail: "wrong-tail"),
            TestResult(entry: entry("hang", 2), outcome: .timeout, duration: 3, message: "the test did not end within 3 s"),
            TestResult(entry: TestRunEntry.boot(of: "linux", before: entry("late", 3)), outcome: .error, duration: 20,
                       message: "guest linux did not boot: no ready text \"x\" within 20 s (boot_timeout)", consoleTail: "boot-tail"),
            TestResult(entry: entry("late", 3), outcome: .skipped, duration: 0, message: "not run: guest linux did not boot"),
            TestResult(entry: entry("last", 4), outcome: .cancelled, duration: 0, message: "not run: the run was cancelled"),
        ]
        return TestReport(lab: "lab", startedAt: 1_764_524_379.5, duration: 40.0004, hostname: "ci-7", shards: [], results: results,
                          boots: [GuestBoot(guest: "linux", startedAt: 1_764_524_379.5, seconds: 7.2, ready: true),
                                  GuestBoot(guest: "linux", startedAt: 1_764_524_393, seconds: 20, ready: false)])
    }

    static func count(_ text: String, _ needle: String) -> Int { text.components(separatedBy: needle).count - 1 }

    @Test func summaryJSONAndJUnitCarryTheSameCounts() throws {
        let report = Self.oneOfEach()
        #expect(report.summaryLine == "1 passed, 1 failed, 1 timed out, 1 error, 1 skipped, 1 cancelled")
        #expect(!report.allPassed)

        let summary = try #require(report.json["summary"])
        for outcome in TestOutcome.allCases {
            #expect(summary[outcome.rawValue]?.intValue == 1, "summary.\(outcome.rawValue)")
        }
        #expect(summary["total"]?.intValue == 6)
        #expect(summary["boot_seconds"]?.doubleValue == 7.2)
        #expect(report.json["started_at"]?.stringValue == "2025-11-30T17:39:39.500Z")
        #expect(report.json["started_at_seconds"]?.doubleValue == 1_764_524_379.5)
        #expect(report.json["duration_seconds"]?.doubleValue == 40)
        #expect(report.json["hostname"]?.stringValue == "ci-7")

        let xml = JUnitReport.xml(report)
        #expect(xml.contains(#"<testsuites name="lab" tests="6" failures="1" errors="2" skipped="2" time="40.000">"#), "\(xml)")
        #expect(xml.contains(#"tests="6" failures="1" errors="2" skipped="2" time="33.450" timestamp="2025-11-30T17:39:39" hostname="ci-7">"#), "\(xml)")
        #expect(Self.count(xml, "<failure ") == 1)
        #expect(Self.count(xml, "<error ") == 2)
        #expect(Self.count(xml, #"type="timeout""#) == 1)
        #expect(Self.count(xml, "<skipped ") == 2)
        #expect(xml.contains(#"<skipped message="not run: guest linux did not boot"/>"#))
        #expect(xml.contains(#"<skipped message="cancelled">not run: the run was cancelled</skipped>"#))
        #expect(xml.contains(#"<testcase classname="lab.linux" name="boot" time="20.000">"#))
        #expect(xml.contains("--- console tail ---\nboot-tail"))
        #expect(xml.contains(#"<property name="boot_seconds" value="7.200"/>"#))

        // The same numbers after a round trip through the file `qlab report merge` reads.
        let path = "/tmp/qlab-agree-" + String(UInt32.random(in: 0...UInt32.max), radix: 36) + ".json"
        defer { unlink(path) }
        try FileSystem.writeJSON(path, report.json)
        let read = try TestReport(path: path)
        #expect(read.summaryLine == report.summaryLine)
        #expect(read.startedAt == report.startedAt)
        #expect(read.hostname == "ci-7")
        #expect(read.boots.map(\.ready) == [true, false])
        #expect(read.results.first { $0.entry.isBoot }?.entry.displayName == "boot")
        #expect(JUnitReport.xml(read) == xml)
    }

    @Test func summaryLinePrintsOnlyNonZeroCounts() {
        var report = Self.oneOfEach()
        report.results = report.results.filter { $0.outcome == .passed || $0.outcome == .timeout }
        #expect(report.summaryLine == "1 passed, 1 timed out")
        report.results = []
        #expect(report.summaryLine == "no runs")
    }

    @Test func reportTimes() {
        #expect(JSONTime.iso8601(0) == "1970-01-01T00:00:00.000Z")
        #expect(JSONTime.iso8601(951_782_400.25) == "2000-02-29T00:00:00.250Z")
        #expect(JSONTime.iso8601(.nan) == "1970-01-01T00:00:00.000Z")
        #expect(JSONTime.iso8601(1e300) == "1970-01-01T00:00:00.000Z")
        #expect(JSONTime.rounded(1.23456) == 1.235)
        #expect(!HostName.current().isEmpty)
    }

    /// What a busybox console shows around `qlab exec`/`run` commands, plain and chunked.
    @Test func consoleTextWithoutFraming() {
        let nonce = "0123456789abcdef"
        let raw = "boot line\r\n"
            + "~ # printf '%s%s\\n' '__QLAB_B' 'EGIN_\(nonce)__'; (eval 'echo hi') </dev/null; printf '\\n%s%s=%d\\n' '__QLAB_E' 'ND_\(nonce)__' $?\r\n"
            + "__QLAB_BEGIN_\(nonce)__\r\nhi\r\n\r\n__QLAB_END_\(nonce)__=0\r\n"
            + "~ # printf '%s' 'part' >>/tmp/.qlab-cmd-\(nonce); printf '%s%s\\n' '__QLAB_C' 'HUNK_\(nonce)_0__'\r\n"
            + "__QLAB_CHUNK_\(nonce)_0__\r\n"
            + "guest says __QLAB_ in its own words\r\n~ # "
        let clean = String(decoding: ConsoleLog.withoutFraming(Array(raw.utf8)), as: UTF8.self)
        #expect(!clean.contains("__QLAB_B") && !clean.contains("__QLAB_E") && !clean.contains("__QLAB_C"), "\(clean)")
        #expect(clean == "boot line\r\n~ # \nhi\r\n\r\n~ # \nguest says __QLAB_ in its own words\r\n~ # ")
        // Nothing to strip: the very same bytes.
        let plain = Array("a\r\nb\u{1B}[0m\r\n".utf8)
        #expect(ConsoleLog.withoutFraming(plain) == plain)
    }

    /// A tail reads from an offset (where a run began) and never before it.
    @Test func tailSinceOffset() throws {
        let path = "/tmp/qlab-tail-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        defer { unlink(path) }
        let earlier = "EARLIER RUN\n"
        try (earlier + "__QLAB_BEGIN_0123456789abcdef__\nTHIS RUN\n").write(toFile: path, atomically: true, encoding: .utf8)
        #expect(ConsoleLog.tail(path, bytes: 4096, since: earlier.utf8.count) == "THIS RUN\n")
        #expect(ConsoleLog.tail(path, bytes: 4096) == "EARLIER RUN\nTHIS RUN\n")
        #expect(ConsoleLog.tail(path, bytes: 4, since: 0) == "RUN\n")
    }
}

/// Reports of real runs of the test guest (TCG), through the built `qlab`.
@Suite("Reports from real runs", .serialized)
struct RealRunReportTests {
    static func consoleLogs(under root: String) -> [String] {
        let files = FileManager.default.enumerator(atPath: root)?.allObjects.compactMap { $0 as? String } ?? []
        return files.filter { $0.hasSuffix("console.log") }.map { root + "/" + $0 }
    }

    /// A `ready:` text the guest never prints: an error `boot` entry that says
    /// so with the boot's console tail, the test skipped, a plain progress line.
    @Test func guestWithoutItsReadyTextIsABootError() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let written = try env.writeGuestLab("noready", tests: "  never: {run: \"true\"}")
        let yaml = try String(contentsOfFile: written, encoding: .utf8)
            .replacingOccurrences(of: "ready: qlab-guest-ready", with: "ready: qlab-never-printed")
            .replacingOccurrences(of: "boot_timeout: 180s", with: "boot_timeout: 25s")
        let file = try env.writeLab("noready", yaml)
        let json = env.root + "/report.json"
        let junit = env.root + "/junit.xml"
        let result = try env.qlab("run", file, "--transport", "console", "--json-report", json, "--junit", junit)
        // No test failed: a guest that does not boot is infrastructure (exit 5).
        #expect(result.status == 5, "\(result.output)")
        #expect(result.stdout.contains("guest linux did not boot ("), "\(result.stdout)")
        #expect(result.stdout.contains("no ready text \"qlab-never-printed\" within 25 s"), "\(result.stdout)")
        #expect(result.stdout.contains("1 error, 1 skipped"), "\(result.stdout)")

        let report = try TestReport(path: json)
        #expect(report.results.map(\.outcome) == [.error, .skipped])
        let boot = try #require(report.results.first)
        #expect(boot.entry.isBoot)
        #expect(boot.message == "guest linux did not boot: no ready text \"qlab-never-printed\" within 25 s (boot_timeout)", "\(boot.message)")
        #expect(boot.duration >= 25)
        // That boot's console: the guest did boot, and printed its (real) ready text.
        #expect(boot.consoleTail.contains("qlab-guest-ready"), "\(boot.consoleTail)")
        #expect(!boot.consoleTail.contains("__QLAB_"))
        #expect(report.boots.map(\.ready) == [false])
        // The boot's whole console log, copied beside the report: the kernel's start too, which the tail has lost.
        let log = try #require(boot.consoleLog, "the failed boot's console log is copied")
        #expect(ReportPaths.directory(of: log) == env.root)
        let text = try String(contentsOfFile: log, encoding: .utf8)
        #expect((boot.consoleTail.isEmpty || text.contains(boot.consoleTail)) && !text.contains("__QLAB_"), "\(text.suffix(500))")
        #expect(boot.startedAt != nil)
        let xml = try String(contentsOfFile: junit, encoding: .utf8)
        #expect(xml.contains(#"<testcase classname="noready.linux" name="boot""#), "\(xml)")
        #expect(xml.contains(#"type="error">guest linux did not boot: no ready text"#), "\(xml)")
        #expect(xml.contains(#"tests="2" failures="0" errors="1" skipped="1""#), "\(xml)")
        #expect(env.qemuProcesses().isEmpty)
    }

    /// Two failing tests that print different texts: each result has its own
    /// output and console tail; no framing in what users read; progress lines.
    @Test func eachRunHasItsOwnOutputAndNoFraming() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        // $((6*7)): the text printed differs from the text typed (which the console echoes).
        let file = try env.writeGuestLab("iso", tests: """
              one: {run: "echo OUT-$((6*7))-ONE; exit 3"}
              two: {run: "echo OUT-$((6*7))-TWO; exit 4"}
            """)
        let json = env.root + "/report.json"
        let junit = env.root + "/junit.xml"
        let result = try env.qlab("run", file, "--transport", "console", "--json-report", json, "--junit", junit)
        #expect(result.status == 1, "\(result.output)")
        #expect(result.stdout.contains("guest linux ready in "), "\(result.stdout)")
        #expect(result.stdout.hasSuffix("2 failed\n"), "\(result.stdout)")
        #expect(!result.stdout.contains("\u{1B}["), "no terminal control sequences through a pipe")

        let report = try TestReport(path: json)
        #expect(report.results.map(\.outcome) == [.failed, .failed])
        let (one, two) = (report.results[0], report.results[1])
        #expect(one.output == "OUT-42-ONE\n")
        #expect(two.output == "OUT-42-TWO\n")
        #expect(one.consoleTail.contains("OUT-42-ONE"), "\(one.consoleTail)")
        #expect(two.consoleTail.contains("OUT-42-TWO"), "\(two.consoleTail)")
        #expect(!two.consoleTail.contains("OUT-42-ONE"), "run two's tail shows run one: \(two.consoleTail)")
        #expect(!two.consoleTail.contains("qlab-guest-ready"), "run two's tail shows the boot: \(two.consoleTail)")
        #expect(report.boots.count == 1 && report.boots[0].ready)

        let raw = Self.consoleLogs(under: env.stateRoot)
        #expect(!raw.isEmpty)
        let rawText = raw.compactMap { try? String(contentsOfFile: $0, encoding: .utf8) }.joined()
        // QEMU's own log has the framing; what users read must not.
        #expect(rawText.contains("__QLAB_"))
        let log = try env.qlab("console", "--log", "iso")
        #expect(log.status == 0, "\(log.output)")
        #expect(log.stdout.contains("OUT-42-ONE") && log.stdout.contains("OUT-42-TWO"), "\(log.stdout)")
        #expect(!log.stdout.contains("__QLAB_"), "\(log.stdout)")
        #expect(!(try String(contentsOfFile: json, encoding: .utf8)).contains("__QLAB_"))
        #expect(!(try String(contentsOfFile: junit, encoding: .utf8)).contains("__QLAB_"))
        #expect(env.qemuProcesses().isEmpty)
    }
}
