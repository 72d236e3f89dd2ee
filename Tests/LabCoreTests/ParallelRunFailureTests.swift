import Foundation
@testable import LabCore
import LabSupervision
import Platform
import QMP
import Testing

/// Which names `--jobs` clones take (no QEMU).
struct CloneNameTests {
    /// A name with any state (state dir, runtime dir, lock file, RAM dir) is passed over;
    /// when every candidate is taken, there are fewer clones.
    @Test func clonesPassOverNamesWithState() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeLab("m", "name: m\nguests:\n  g: {os: linux, kernel: /k}\ntests:\n  t: {run: \"true\"}\n")
        var options = TestRunner.Options()
        options.jobs = 3
        let runner = try TestRunner(controller: env.controller, labFile: file, options: options)
        #expect(runner.cloneNames(count: 2).free == ["m-j2", "m-j3"])
        try FileManager.default.createDirectory(atPath: env.stateRoot + "/m-j2", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: env.runtimeRoot, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: env.runtimeRoot + "/m-j4.lock", contents: nil)
        let (free, taken) = runner.cloneNames(count: 2)
        #expect(free == ["m-j3", "m-j5"])
        #expect(taken == ["m-j2", "m-j4"])
        for k in 2...(2 + 1 + TestRunner.spareCloneNames) {
            try FileManager.default.createDirectory(atPath: env.stateRoot + "/m-j\(k)", withIntermediateDirectories: true)
        }
        #expect(runner.cloneNames(count: 2).free.isEmpty)
    }
}

/// `qlab run --jobs 2` when things go wrong, with real QEMU 7.2 (TCG) and the test guest.
@Suite("qlab run --jobs failure paths (real guest)", .serialized)
struct ParallelRunFailureTests {
    /// Four tests that each print a marker on the console, sleep, and pass.
    static let sleepers = (1...4).map { "  s\($0): {run: \"echo QLAB-SL''EEPING; sleep 5; echo done-\($0)\", expect: done-\($0), timeout: 120s}" }
        .joined(separator: "\n")

    /// A QEMU wrapper (the lab's `qemu:`) that fails to start, with a message on stderr,
    /// when `condition` (a shell test) holds; otherwise it is QEMU.
    static func wrapper(_ env: QLabTestEnvironment, _ name: String, failWhen condition: String, then action: String = "") throws -> String {
        let path = env.labDirectory + "/" + name
        try """
            #!/bin/sh
            if \(condition); then
              \(action)
              echo "qemu-system-x86_64: qlab test: simulated failure to start" >&2
              exit 1
            fi
            exec qemu-system-x86_64 "$@"

            """.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }

    /// The JSON report's summary, the JUnit counts and the HTML matrix say the same as the results.
    static func expectCountsAgree(_ report: TestReport, json: String, junit: String, html: String) throws {
        let summary = try #require(FileSystem.readJSON(json)?["summary"])
        #expect(summary["total"]?.intValue == report.results.count)
        for outcome in TestOutcome.allCases {
            #expect(summary[outcome.rawValue]?.intValue == report.count(outcome), "\(outcome)")
        }
        let xml = try String(contentsOfFile: junit, encoding: .utf8)
        let errors = report.count(.error) + report.count(.timeout)
        let skipped = report.count(.skipped) + report.count(.cancelled)
        #expect(xml.contains(#"tests="\#(report.results.count)" failures="\#(report.count(.failed))" errors="\#(errors)" skipped="\#(skipped)""#), "\(xml.prefix(300))")
        #expect(xml.components(separatedBy: "<testcase ").count - 1 == report.results.count)
        let page = try String(contentsOfFile: html, encoding: .utf8)
        #expect(page.components(separatedBy: "<details id=\"run-").count - 1 == report.results.count)
    }

    /// The clone's QEMU aborts in the middle of a test (an assertion's text on its
    /// stderr, then SIGABRT, as QEMU's own assertion failures end): that entry is an
    /// `error` saying the signal, with QEMU's last output and its diagnosis in the JSON
    /// report, JUnit and HTML; the lab runs the rest; the counts agree; nothing of the
    /// clone is left (no QEMU, state, lock file).
    @Test func aCloneWhoseQEMUAbortsIsAnErrorAndTheRestFinish() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("abrt", tests: Self.sleepers)
        let (json, junit, html) = (env.root + "/r.json", env.root + "/r.xml", env.root + "/r.html")
        let run = try BackgroundQLab(env, ["run", file, "--jobs", "2", "--json-report", json, "--junit", junit, "--html", html])
        defer { if run.process.isRunning { _ = run.signal(SIGKILL) } }
        #expect(waitUntil(limit: .seconds(400)) { CancellationQEMUTests.sleeping(env, "abrt-j2") }, "the clone never ran a test: \(run.stdout)\(run.stderr)")
        let clone = env.runtime("abrt-j2")
        let record = try #require(try clone.record)
        // Only the clone's own QEMU: its record's pid, alive with the start time recorded, and its stderr the clone's log.
        let pid = try #require(clone.liveQEMU(record))
        #expect(pid == record.qemuPID)
        let stderr = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/2")
        try #require(stderr == clone.qemuLogPath, "QEMU's stderr is \(stderr)")
        let assertion = "qemu-system-x86_64: ../migration/savevm.c:901: vmstate_register_with_alias_id: Assertion `!se->compat || se->instance_id == 0' failed."
        let log = try #require(FileHandle(forWritingAtPath: clone.qemuLogPath))
        log.seekToEndOfFile()
        log.write(Data((assertion + "\n").utf8))
        try log.close()
        #expect(kill(pid, SIGABRT) == 0)
        #expect(waitUntil(limit: .seconds(600)) { !run.process.isRunning }, "the run did not end: \(run.stdout)")
        let status = run.finish()
        // The clone's QEMU aborted: an error, no test failed (exit 5).
        #expect(status == 5, "\(run.stdout)\(run.stderr)")

        let report = try TestReport(path: json)
        #expect(report.results.map(\.entry.test) == ["s1", "s2", "s3", "s4"])
        let failed = report.results.filter { $0.outcome != .passed }
        try #require(failed.count == 1, "\(report.results.map { "\($0.entry.test) \($0.outcome) \($0.message)" })")
        let aborted = failed[0]
        #expect(aborted.outcome == .error)
        #expect(aborted.worker == "abrt-j2")
        #expect(aborted.message.contains("killed by signal 6 (SIGABRT) during the test"), "\(aborted.message)")
        #expect(aborted.qemuOutput.hasSuffix(assertion), "\(aborted.qemuOutput)")
        // The catalog's match for QEMU's text, whatever the catalog says of it.
        #expect(aborted.diagnoses.map(\.id) == Diagnoser.diagnose(aborted.qemuOutput).map(\.id))
        #expect(report.count(.passed) == 3)
        try Self.expectCountsAgree(report, json: json, junit: junit, html: html)
        let raw = try String(contentsOfFile: json, encoding: .utf8)
        #expect(raw.contains("\"qemu_output\""), "the JSON report has QEMU's output")
        let xml = try String(contentsOfFile: junit, encoding: .utf8)
        #expect(xml.contains(JUnitReport.escape("--- QEMU's last output ---\n" + aborted.qemuOutput)), "\(xml)")
        let page = try String(contentsOfFile: html, encoding: .utf8)
        #expect(page.contains("<pre class=\"qemu\">"), "the HTML report shows QEMU's output")
        #expect(page.contains("vmstate_register_with_alias_id: Assertion"))
        for diagnosis in aborted.diagnoses {
            #expect(xml.contains("[\(diagnosis.id)]") && page.contains("<code>\(diagnosis.id)</code>"))
        }
        #expect(CancellationQEMUTests.lingering(env).isEmpty, "\(CancellationQEMUTests.lingering(env))")
        #expect(!clone.hasAnyState, "the clone's state, lock file or RAM directory is left")
        CancellationQEMUTests.expectNothingLeft(env, "abrt", "after the run")
    }

    /// A clone whose QEMU does not start: a note says so and the run goes on with the lab alone.
    @Test func aCloneThatDoesNotStartLeavesTheRunWithFewerJobs() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let qemu = try Self.wrapper(env, "qemu-no-clone", failWhen: #"case "$*" in *"/noclone-j2/"*) true;; *) false;; esac"#)
        let file = try env.writeGuestLab("noclone", tests: "  t1: {run: \"true\"}\n  t2: {run: \"true\"}\n  t3: {run: \"true\"}", extra: "qemu: \(qemu)")
        let json = env.root + "/r.json"
        let run = try env.qlab("run", file, "--jobs", "2", "--json-report", json)
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("note: worker noclone-j2 did not start: "), "\(run.output)")
        #expect(run.output.contains("simulated failure to start"), "the note says QEMU's words: \(run.output)")
        #expect(run.output.contains("; running with fewer jobs"), "\(run.output)")
        let report = try TestReport(path: json)
        #expect(report.results.map(\.outcome) == [.passed, .passed, .passed])
        #expect(report.results.allSatisfy { $0.worker == "noclone" }, "\(report.results.map(\.worker))")
        #expect(!env.runtime("noclone-j2").hasAnyState, "the clone that did not start left state")
        #expect(env.qemuProcesses().isEmpty)
    }

    /// The lab's first QEMU does not start: that boot is the `boot` error (QEMU's words kept),
    /// the entry it was for is skipped, the next boot works, a clone joins, the rest pass.
    @Test func theFirstBootFailingUnderJobs() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let once = env.labDirectory + "/failed-once"
        let qemu = try Self.wrapper(env, "qemu-fail-once", failWhen: #"[ ! -e \#(once) ] && case "$*" in *"/fb/"*) true;; *) false;; esac"#, then: "touch \(once)")
        let file = try env.writeGuestLab("fb", tests: "  t1: {run: \"true\"}\n  t2: {run: \"true\"}\n  t3: {run: \"true\"}", extra: "qemu: \(qemu)")
        let (json, junit, html) = (env.root + "/r.json", env.root + "/r.xml", env.root + "/r.html")
        let run = try env.qlab("run", file, "--jobs", "2", "--json-report", json, "--junit", junit, "--html", html)
        // A boot error and the entry it kept from running; no test failed (exit 5).
        #expect(run.status == 5, "\(run.output)")
        let report = try TestReport(path: json)
        #expect(report.results.map { "\($0.entry.test):\($0.outcome)" } == ["boot:error", "t1:skipped", "t2:passed", "t3:passed"], "\(run.output)")
        let boot = report.results[0]
        #expect(boot.worker == "fb")
        #expect(boot.message.hasPrefix("guest linux did not boot: QEMU did not start"), "\(boot.message)")
        #expect(boot.qemuOutput.contains("simulated failure to start"), "\(boot.qemuOutput)")
        #expect(report.results[1].message == "not run: " + boot.message)
        #expect(report.boots.map(\.ready) == [false, true])
        #expect(Set(report.results.dropFirst(2).compactMap(\.worker)) == ["fb", "fb-j2"], "a clone joined after the second boot: \(run.output)")
        try Self.expectCountsAgree(report, json: json, junit: junit, html: html)
        #expect(env.qemuProcesses().isEmpty)
        #expect(!env.runtime("fb-j2").hasAnyState)
    }

    /// A guest with a display that never gets ready under --jobs 2: each failed boot is
    /// a `boot` error with the guest's screen saved (the one boot-failure path), no clone is made.
    @Test func failedBootsUnderJobsKeepTheirScreenshots() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try env.writeGuestLab("nofwj", devices: "  {}", tests: "  t1: {run: \"true\"}\n  t2: {run: \"true\"}", extra: "display: vga")
        let text = try String(contentsOfFile: lab, encoding: .utf8)
            .replacingOccurrences(of: "    boot_timeout: 180s", with: "    boot_timeout: 4s\n    firmware_ready: qlab-never-on-screen")
        try text.write(toFile: lab, atomically: true, encoding: .utf8)
        let run = try env.qlab("run", lab, "--jobs", "2", "--json-report", env.root + "/r.json")
        // Boots that failed and what they kept from running: infrastructure only (exit 5).
        #expect(run.status == 5, "\(run.output)")
        let report = try TestReport(path: env.root + "/r.json")
        #expect(report.results.map { "\($0.entry.test):\($0.outcome)" } == ["boot:error", "t1:skipped", "boot:error", "t2:skipped"])
        let shots = report.results.filter(\.isBoot).map(\.screenshot)
        #expect(shots == [env.root + "/nofwj-linux-boot-0.png", env.root + "/nofwj-linux-boot-1.png"], "\(run.output)")
        for case let path? in shots { #expect(FileManager.default.fileExists(atPath: path), "\(path)") }
        #expect(report.results.allSatisfy { $0.worker == "nofwj" })
        #expect(!env.runtime("nofwj-j2").hasAnyState, "a clone was made of a guest that never booted")
        #expect(env.qemuProcesses().isEmpty)
    }

    /// No room for the RAM image (here: a RAM root that is not private, so `auto` picks
    /// loadvm): the guest's tests run with one job and a note says why.
    @Test func noRAMImageFallsBackToOneJob() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let ram = env.root + "/ram-shared"
        try FileManager.default.createDirectory(atPath: ram, withIntermediateDirectories: true)
        chmod(ram, 0o777)
        var environment = env.environment
        environment["QLAB_RAM_DIR"] = ram
        let file = try env.writeGuestLab("noram", tests: "  t1: {run: \"true\"}\n  t2: {run: \"true\"}")
        let json = env.root + "/r.json"
        let run = try env.qlab(["run", file, "--jobs", "2", "--json-report", json], environment: environment)
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("note: --jobs 2: guest linux reverts with loadvm (loadvm: "), "\(run.output)")
        #expect(run.output.contains("its tests run with 1 job"), "\(run.output)")
        let report = try TestReport(path: json)
        #expect(report.results.map(\.outcome) == [.passed, .passed])
        #expect(report.results.allSatisfy { $0.worker == "noram" })
        #expect(report.results.allSatisfy { $0.steps.contains { $0.name == "revert loadvm" } }, "\(report.results.map(\.steps))")
        #expect(!env.runtime("noram-j2").hasAnyState)
        #expect(env.qemuProcesses().isEmpty)
    }

    /// The user's own stopped lab `own-j2` is left alone (its `lab-file.json` too): the
    /// clone takes `own-j3` and says so. The lab file has no `name:`; the clone's name is its
    /// record's, and its state goes once the run is over.
    @Test func aStoppedLabNamedLikeACloneIsLeftAlone() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        // The user's lab own-j2: started and stopped, so it has a state dir and lab-file.json.
        let mine = try env.writeGuestLab("own-j2", devices: "  {}", tests: "  t: {run: \"true\"}")
        let up = try env.qlab("up", mine)
        #expect(up.status == 0, "\(up.output)")
        #expect(try env.qlab("down", "own-j2").status == 0)
        let labFileRecord = env.runtime("own-j2").labFileRecordPath
        let before = try Data(contentsOf: URL(fileURLWithPath: labFileRecord))
        #expect(env.runtime("own-j2").lastLabFile == mine)

        let named = try env.writeGuestLab("own", tests: Self.sleepers)
        let file = env.labDirectory + "/own.yaml"
        let text = try String(contentsOfFile: named, encoding: .utf8).replacingOccurrences(of: "name: own\n", with: "")
        #expect(!text.contains("name:"))
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try Lab.load(path: file).name == "own")
        let json = env.root + "/r.json"
        let run = try env.qlab("run", file, "--jobs", "2", "--json-report", json)
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("note: --jobs 2: own-j2 already exists (a lab's state), left alone; clones: own-j3"), "\(run.output)")
        let report = try TestReport(path: json)
        #expect(report.results.map(\.outcome) == [.passed, .passed, .passed, .passed])
        #expect(Set(report.results.compactMap(\.worker)) == ["own", "own-j3"], "\(report.results.map(\.worker))")
        #expect(try Data(contentsOf: URL(fileURLWithPath: labFileRecord)) == before, "own-j2's lab-file.json was rewritten")
        #expect(env.runtime("own-j2").lastLabFile == mine)
        #expect(!env.runtime("own-j3").hasAnyState, "the clone's state is left")
        #expect(env.qemuProcesses().isEmpty)
    }
}
