import Foundation
import LabCore
import Platform
import QMP
import Synchronization
import Testing

/// The matrix, shards and reports: no QEMU.
@Suite("Test run matrix and reports")
struct RunMatrixTests {
    static func lab() throws -> Lab {
        try Lab.parse(yaml: """
            name: m
            guests:
              a: {os: linux, kernel: /k, initrd: /i}
              b: {os: linux, kernel: /k, initrd: /i}
            tests:
              t1: {run: "true"}
              t2: {run: "true", guests: [b]}
            """, file: "/tmp/m.yaml")
    }

    @Test func matrixOrderAndSelection() throws {
        let matrix = try TestMatrix(lab: try Self.lab(), repeats: 2)
        #expect(matrix.entries.map { "\($0.guest)/\($0.test)#\($0.repeatIndex)" } == [
            "a/t1#1", "a/t1#2", "b/t1#1", "b/t1#2", "b/t2#1", "b/t2#2",
        ])
        let onlyB = try TestMatrix(lab: try Self.lab(), guests: ["b"], tests: ["t2"])
        #expect(onlyB.entries.map(\.test) == ["t2"])
        #expect(throws: TestMatrix.SelectionError.self) { try TestMatrix(lab: try Self.lab(), guests: ["zz"]) }
        #expect(throws: TestMatrix.SelectionError.self) { try TestMatrix(lab: try Self.lab(), guests: ["a"], tests: ["t2"]) }
    }

    @Test func shardsCoverTheMatrixExactlyOnce() throws {
        let whole = try TestMatrix(lab: try Self.lab(), repeats: 3).entries
        for count in 1...5 {
            var seen: [Int] = []
            for index in 1...count {
                seen += try TestMatrix(lab: try Self.lab(), repeats: 3, shard: Shard(index: index, count: count)).entries.map(\.matrixIndex)
            }
            #expect(seen.sorted() == whole.map(\.matrixIndex))
        }
        #expect(Shard("2/4") == Shard(index: 2, count: 4))
        #expect(Shard("0/4") == nil)
        #expect(Shard("5/4") == nil)
    }

    @Test func junitAndMergeOfShards() throws {
        let dir = "/tmp/qlab-report-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let entries = try TestMatrix(lab: try Self.lab()).entries
        let results = [
            TestResult(entry: entries[0], outcome: .passed, duration: 1.5, exitStatus: 0, output: "ok <&>"),
            TestResult(entry: entries[1], outcome: .failed, duration: 2, exitStatus: 1, message: "exit status 1 (expected 0)"),
            TestResult(entry: entries[2], outcome: .timeout, duration: 60, message: "did not end"),
        ]
        let first = TestReport(lab: "m", startedAt: 10, duration: 5, shards: ["1/2"], results: [results[0], results[2]])
        let second = TestReport(lab: "m", startedAt: 11, duration: 7, shards: ["2/2"], results: [results[1]])
        try FileSystem.writeJSON(dir + "/1.json", first.json)
        try FileSystem.writeJSON(dir + "/2.json", second.json)
        let merged = try TestReport.merge(paths: [dir + "/1.json", dir + "/2.json"])
        #expect(merged.results.map(\.entry.matrixIndex) == [0, 1, 2])
        #expect(merged.summaryLine == "1 passed, 1 failed, 1 timed out")
        #expect(merged.shards == ["1/2", "2/2"])
        #expect(throws: TestReport.ReadError.self) { try TestReport.merge(paths: [dir + "/1.json", dir + "/1.json"]) }

        let xml = JUnitReport.xml(merged)
        #expect(xml.contains(#"<testsuites name="m" tests="3" failures="1" errors="1""#))
        #expect(xml.contains(#"<testcase classname="m.a" name="t1" time="1.500">"#))
        #expect(xml.contains("ok &lt;&amp;&gt;"))
        #expect(xml.contains(#"<failure message="exit status 1 (expected 0)" type="failed">"#))
        #expect(xml.contains(#"<error message="did not end" type="timeout">"#))
        #expect(JUnitReport.escape("a\u{1}b\"") == "a\u{FFFD}b&quot;")
    }
}

/// The loop with the real test guest under TCG (images/build.sh builds it).
@Suite("Test run loop (real guest)", .serialized)
struct RunLoopTests {
    static func requireImages() throws {
        let needed = ["linux/vmlinuz", "linux/initrd.img", "linux/disk.qcow2", "scsi-target.qcow2"]
        for file in needed where !FileManager.default.fileExists(atPath: QLabTestEnvironment.imagesOut + "/" + file) {
            Issue.record("images/out/\(file) is missing: run images/build.sh (the README's test command does)")
            throw CancellationError()
        }
    }

    /// Boot, hotplug, the guest sees the disk, unplug, save, write, load: the write is gone.
    @Test func snapshotLoadUndoesAGuestWrite() async throws {
        try Self.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("snap", tests: "  none: {run: \"true\"}")
        _ = try await env.controller.up(labFile: file, options: .init())
        let session = try await LabSession.open(runtime: env.runtime("snap"))
        defer { session.close() }
        let console = try GuestConsole.connect(runtime: env.runtime("snap"))
        defer { console.close() }
        let guest = try session.guest
        try await console.waitForReady(guest)

        _ = try await session.attach("scsi-lsi")
        let scan = try await console.run("qlab-scsi-scan -w 20 -n 1 && qlab-target-check /dev/sda", timeout: .seconds(60))
        #expect(scan.exitStatus == 0, "\(scan.output)")
        #expect(scan.output.contains("qlab-target-check: ok"))
        _ = try await session.detach("scsi-lsi")
        let gone = try await console.run("sleep 1; ls /sys/class/scsi_disk | wc -l", timeout: .seconds(30))
        #expect(gone.output.trimmingCharacters(in: .whitespacesAndNewlines) == "0")

        // The guest's own disk is virtio-blk (/dev/vda): write a marker after the snapshot.
        _ = try await session.saveSnapshot("clean")
        let write = try await console.run("echo QLAB-MARK-42 | dd of=/dev/vda bs=512 count=1 conv=fsync 2>/dev/null; head -c 12 /dev/vda", timeout: .seconds(30))
        #expect(write.output.contains("QLAB-MARK-42"))
        _ = try await session.loadSnapshot("clean")
        console.skipReceived()
        let read = try await console.run("echo 3 > /proc/sys/vm/drop_caches; head -c 12 /dev/vda | od -c | head -1", timeout: .seconds(30))
        #expect(!read.output.contains("Q   L   A   B   -   M   A   R   K"), "\(read.output)")
        #expect(read.exitStatus == 0)
    }

    /// Ten revert cycles: no growth in descriptors, processes, files or overlay size.
    @Test func tenRevertCyclesLeakNothing() async throws {
        try Self.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("cycles", tests: "  none: {run: \"true\"}")
        let up = try await env.controller.up(labFile: file, options: .init())
        let runtime = env.runtime("cycles")
        let session = try await LabSession.open(runtime: runtime)
        defer { session.close() }
        let console = try GuestConsole.connect(runtime: runtime)
        defer { console.close() }
        try await console.waitForReady(try session.guest)
        _ = try await session.saveSnapshot("ready")
        let overlay = runtime.stateDirectory + "/linux/disk.qcow2"

        func openDescriptors() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }
        func qemuDescriptors() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(up.record.qemuPID)/fd").count) ?? -1 }
        func stateFiles() -> Int {
            (FileManager.default.enumerator(atPath: runtime.stateDirectory)?.allObjects.count) ?? -1
        }
        var baseline: (fds: Int, qemuFDs: Int, files: Int, overlay: Int, processes: Int)?
        for cycle in 1...10 {
            _ = try await session.revert(to: "ready")
            console.skipReceived()
            let seen = try await console.run("qlab-scsi-scan -w 20 -n 1 >/dev/null && qlab-target-check /dev/sda", timeout: .seconds(60))
            #expect(seen.exitStatus == 0, "cycle \(cycle): \(seen.output)")
            let now = (openDescriptors(), qemuDescriptors(), stateFiles(), FileSystem.size(overlay) ?? -1, env.qemuProcesses().count)
            if cycle == 2 { baseline = now }
            if let baseline, cycle > 2 {
                // Other suites may run alongside and open descriptors of their own:
                // a leak shows as growth, so the count may not rise.
                #expect(now.0 <= baseline.fds, "test process descriptors after cycle \(cycle)")
                #expect(now.1 == baseline.qemuFDs, "QEMU descriptors after cycle \(cycle)")
                #expect(now.2 == baseline.files, "state files after cycle \(cycle)")
                #expect(now.4 == 1)
                // A revert rewrites nothing new: the overlay stays within a cluster-sized wobble.
                #expect(now.3 <= baseline.overlay + (1 << 20), "overlay grew from \(baseline.overlay) to \(now.3)")
            }
        }
    }

    /// A test that hangs ends in a timeout and the loop goes on; the CLI's reports say so.
    @Test func hangingTestTimesOutAndTheLoopContinues() async throws {
        try Self.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("hang", tests: """
              hang: {run: "sleep 1000", timeout: 3s}
              after: {run: "qlab-target-check /dev/sda", expect: "qlab-target-check: ok"}
            """)
        let json = env.root + "/report.json"
        let junit = env.root + "/report.xml"
        let result = try env.qlab("run", file, "--json-report", json, "--junit", junit)
        #expect(result.status == 1, "\(result.stdout)\(result.stderr)")
        let report = try TestReport(path: json)
        #expect(report.results.map(\.outcome) == [.timeout, .passed])
        #expect(report.results.first?.message.contains("3 s") == true)
        let xml = try String(contentsOfFile: junit, encoding: .utf8)
        #expect(xml.contains(#"type="timeout""#))
        #expect(result.stdout.contains("1 passed, 1 timed out"), "\(result.stdout)")
        #expect(env.qemuProcesses().isEmpty)
    }

    /// QEMU killed in the middle of a test: an error entry with the signal, the guest restarts, the loop goes on.
    @Test func killedQEMUMidRunIsAnErrorAndTheLoopContinues() async throws {
        try Self.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("victim", tests: """
              victim: {run: "sleep 30", timeout: 120s}
              after: {run: "qlab-target-check /dev/sda", expect: "qlab-target-check: ok"}
            """)
        let runtime = env.runtime("victim")
        var options = TestRunner.Options()
        options.transport = .console
        // Once the guest is up (the restart after the kill is left alone).
        let killed = Mutex(false)
        let runner = try TestRunner(controller: env.controller, labFile: file, options: options) { event in
            if case .guestReady = event, killed.withLock({ done in defer { done = true }; return !done }) {
                Task.detached {
                    try? await Task.sleep(for: .seconds(2))
                    if let pid = ((try? runtime.record) ?? nil)?.qemuPID { kill(pid, SIGKILL) }
                }
            }
        }
        let report = try await runner.run()
        #expect(report.results.map(\.outcome) == [.error, .passed], "\(report.results.map(\.message))")
        let victim = try #require(report.results.first)
        #expect(victim.message.contains("SIGKILL"), "\(victim.message)")
        #expect(env.qemuProcesses().isEmpty)
    }

    /// strategy: reset reboots between runs; hooks run on the host with the run's context.
    @Test func resetStrategyAndHostHooks() async throws {
        try Self.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let hookLog = env.root + "/hooks.log"
        let file = try env.writeGuestLab("resets", tests: """
              mark: {run: "test ! -e /tmp/qlab-mark && touch /tmp/qlab-mark && qlab-target-check /dev/sda", expect: "qlab-target-check: ok"}
            """, extra: """
            strategy: reset
            hooks:
              before_each: echo "before $QLAB_GUEST $QLAB_TEST $QLAB_REPEAT $QLAB_RUN_INDEX/$QLAB_RUN_TOTAL" >> \(hookLog)
              after_each: echo "after $QLAB_TEST $QLAB_RESULT" >> \(hookLog)
            """)
        var options = TestRunner.Options()
        options.repeats = 2
        let runner = try TestRunner(controller: env.controller, labFile: file, options: options)
        let report = try await runner.run()
        // The second run passes only if the reset gave it a fresh guest (/tmp is the initramfs).
        #expect(report.results.map(\.outcome) == [.passed, .passed], "\(report.results.map(\.message))")
        #expect(report.results.last?.steps.contains { $0.name == "reset" } == true)
        let log = try String(contentsOfFile: hookLog, encoding: .utf8)
        #expect(log == "before linux mark 1 1/2\nafter mark passed\nbefore linux mark 2 2/2\nafter mark passed\n")
        #expect(env.qemuProcesses().isEmpty)
    }
}
