import Foundation
import LabCore
import LabSupervision
import Platform
import Synchronization
import Testing

/// What a `--jobs` run's reports say about workers, and the clones' names (no QEMU).
struct ParallelRunReportTests {
    @Test func resultsSayTheirWorkerInJSONAndJUnit() throws {
        let entry = TestRunEntry(guest: "linux", test: "t1", repeatIndex: 1, matrixIndex: 0)
        var result = TestResult(entry: entry, outcome: .passed, duration: 1, exitStatus: 0)
        result.worker = "m-j2"
        let plain = TestResult(entry: TestRunEntry(guest: "linux", test: "t2", repeatIndex: 1, matrixIndex: 1), outcome: .passed, duration: 1)
        let report = TestReport(lab: "m", startedAt: 10, duration: 2, shards: [], results: [result, plain])
        let back = (report.json["results"]?.arrayValue ?? []).compactMap(TestResult.init)
        #expect(back.map { $0.worker } == ["m-j2", nil])
        let xml = JUnitReport.xml(report)
        #expect(xml.contains(#"<properties><property name="repeat" value="1"/><property name="worker" value="m-j2"/></properties>"#), "\(xml)")
        #expect(xml.components(separatedBy: #"name="worker""#).count == 2, "only the --jobs result has one")
        let html = HTMLReport.html([report])
        #expect(html.contains(#"data-worker="m-j2""#) && html.contains("on <code>m-j2</code>"), "the HTML report says the worker too")
        #expect(html.components(separatedBy: "data-worker=").count == 2, "only the --jobs result has one")
    }

    /// A clone runs its lab's text unchanged; its name is its record's, whether the
    /// text says `name:` or not (a lab file may omit it: named after its file).
    @Test func clonesAreLabsOfTheirOwnName() throws {
        #expect(TestRunner.cloneName("emulated-scsi", worker: 2) == "emulated-scsi-j2")
        for yaml in ["# a lab\nname: m\nguests:\n  g: {os: linux, kernel: k}\ntests:\n  t:\n    run: \"echo name: x\"\n",
                     "guests:\n  g: {os: linux, kernel: k}\ntests:\n  t: {run: \"true\"}\n"] {
            var record = LabRecord(
                name: "m-j3", labFile: "/tmp/m.yaml", guest: "g", qemuPID: 42, supervisorPID: 41, foreground: false,
                startedAt: 1.5, accel: AccelDecision(.tcg, reason: "test"), consoleLog: nil, devices: [], passthroughHosts: [],
                qemuLogOffset: 0, consoleLogOffset: 0)
            record.labSource = yaml
            let lab = try record.lab()
            #expect(lab.name == "m-j3", "\(yaml)")
            #expect(lab.source == yaml, "the clone's record keeps its lab's text")
            #expect(try Lab.parse(yaml: yaml, file: "/tmp/m.yaml").name == "m", "the text itself names the lab")
        }
    }
}

/// `qlab run --jobs N` against real QEMU 7.2 (TCG) and the test guest: 2 jobs, 4 tests.
@Suite("qlab run --jobs (real guest)", .serialized)
struct ParallelRunTests {
    /// Each test first checks that sector 0 of the guest disk holds no marker (whoever
    /// wrote one: this worker's earlier run or the other worker), then writes one.
    static let markerTests = (1...4).map { i in
        "  disk\(i): {run: \"echo 3 > /proc/sys/vm/drop_caches; ! head -c 64 /dev/vda | grep -q QLAB-J && echo QLAB-J\(i) | dd of=/dev/vda bs=512 count=1 conv=notrunc,fsync 2>/dev/null && sleep 4 && echo marked\", expect: marked}"
    }.joined(separator: "\n")

    /// (device, inode) of the RAM image QEMU `pid` maps (`/proc/PID/maps`), nil when it maps none.
    static func mappedImage(_ pid: Int32) -> (String, String)? {
        let maps = (try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)) ?? ""
        for line in maps.split(separator: "\n") where line.hasSuffix("/" + RAMFiles.image("qlab-ready")) {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 6 { return (String(fields[3]), String(fields[4])) }
        }
        return nil
    }

    /// Set once the run's Task has returned, so the poll stops then.
    final class RunEnded: Sendable {
        let flag = Mutex(false)
    }

    /// The lines of `/proc/PID/maps` that name a `.ram` file, for a failure's message.
    static func ramMappings(_ pid: Int32) -> String {
        guard let maps = try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8) else { return "(unreadable)" }
        let lines = maps.split(separator: "\n").filter { $0.contains(".ram") }
        return lines.isEmpty ? "(no .ram file)" : lines.joined(separator: " | ")
    }

    static func digest(_ path: String) throws -> Data {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in data { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return withUnsafeBytes(of: hash) { Data($0) } + withUnsafeBytes(of: data.count) { Data($0) }
    }

    /// Results right and merged (each saying its worker), both QEMUs mapping one RAM
    /// image at once, disk writes per worker, the base image unwritten, nothing left.
    @Test func twoJobsShareTheRAMImageAndKeepTheirDisks() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("par", tests: Self.markerTests)
        let base = QLabTestEnvironment.imagesOut + "/linux/disk.qcow2"
        let baseBefore = try Self.digest(base)

        var options = TestRunner.Options()
        options.jobs = 2
        let runner = try TestRunner(controller: env.controller, labFile: file, options: options)
        let ended = RunEnded()
        let run = Task {
            defer { ended.flag.withLock { $0 = true } }
            return try await runner.run()
        }
        // While they run, each worker's QEMU maps the ready snapshot's RAM image,
        // and it is one file: observed per worker (dev, inode), at once or not
        // (which worker takes which entry, and when, is the scheduler's).
        var seen: [String: Set<String>] = [:]
        var lastLook: [String: String] = [:]
        let both = await waitUntilAsync(limit: .seconds(400)) {
            for name in ["par", "par-j2"] {
                guard let pid = ((try? env.runtime(name).record) ?? nil)?.qemuPID else { lastLook[name] = "no record"; continue }
                if let image = Self.mappedImage(pid) {
                    seen[name, default: []].insert("\(image.0) \(image.1)")
                } else {
                    lastLook[name] = "QEMU \(pid) maps: " + Self.ramMappings(pid)
                }
            }
            return seen.count == 2 || ended.flag.withLock { $0 }
        } && seen.count == 2
        #expect(both, "a worker's QEMU was never seen mapping the RAM image: seen \(seen), last looks \(lastLook)")
        if both {
            #expect(Set(seen.values.flatMap { $0 }).count == 1, "different files mapped: \(seen)")
            let overlays = ["par", "par-j2"].map { env.stateRoot + "/\($0)/linux/run/disk.qcow2" }
            #expect(overlays.allSatisfy { FileManager.default.fileExists(atPath: $0) }, "\(overlays)")
        }
        let report = try await run.value
        #expect(report.results.count == 4)
        #expect(report.results.allSatisfy { $0.outcome == .passed }, "\(report.results.map { "\($0.entry.test): \($0.outcome) \($0.message) \($0.output)" })")
        #expect(report.results.map(\.entry.test) == ["disk1", "disk2", "disk3", "disk4"])
        #expect(Set(report.results.compactMap(\.worker)) == ["par", "par-j2"], "\(report.results.map(\.worker))")
        let json = try report.json.jsonString()
        #expect(json.contains(#""worker":"par-j2""#) || json.contains(#""worker": "par-j2""#), "\(json.prefix(400))")
        #expect(try Self.digest(base) == baseBefore, "the base image was written")
        #expect(CancellationQEMUTests.lingering(env).isEmpty, "\(CancellationQEMUTests.lingering(env))")
        for name in ["par", "par-j2"] {
            #expect(!FileManager.default.fileExists(atPath: env.runtime(name).directory), "\(name): runtime dir left")
            #expect(!FileManager.default.fileExists(atPath: env.runtime(name).ramDirectoryPath), "\(name): RAM dir left")
        }
    }

    /// Ctrl-C while both workers run a test: exit 130, both labs' QEMUs and supervisors
    /// gone, no runtime dir, lock file or RAM directory left.
    @Test func ctrlCOfTwoJobsLeavesNothing() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("pctrl", tests: """
              s1: {run: "echo QLAB-SL''EEPING; sleep 1000", timeout: 600s}
              s2: {run: "echo QLAB-SL''EEPING; sleep 1000", timeout: 600s}
            """)
        let json = env.root + "/report.json"
        let run = try BackgroundQLab(env, ["run", file, "--jobs", "2", "--json-report", json])
        #expect(waitUntil(limit: .seconds(400)) {
            CancellationQEMUTests.sleeping(env, "pctrl") && CancellationQEMUTests.sleeping(env, "pctrl-j2")
        }, "the sleepers never started: \(run.stdout)\(run.stderr)")
        let status = run.signal(SIGINT)
        #expect(status == 130, "\(run.stdout)\(run.stderr)")
        let report = try TestReport(path: json)
        #expect(report.results.map(\.outcome) == [.cancelled, .cancelled], "\(report.results.map(\.outcome))")
        for name in ["pctrl", "pctrl-j2"] {
            CancellationQEMUTests.expectNothingLeft(env, name, "after SIGINT (\(name))")
            #expect(!FileManager.default.fileExists(atPath: env.runtime(name).ramDirectoryPath), "\(name): RAM dir left")
        }
    }

    /// A lab with a passed-through card, or `revert: loadvm`, refuses --jobs 2 with exit 2
    /// and why, before anything starts.
    @Test func passthroughAndLoadvmLabsRefuseJobs() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let vfio = try env.writeGuestLab("pvfio", devices: """
              card:
                passthrough: {host: "0000:03:05.0"}
                attach: hotplug
            """, tests: "  t: {run: \"true\"}")
        let refused = try env.qlab("run", vfio, "--jobs", "2")
        #expect(refused.status == 2, "\(refused.output)")
        #expect(refused.stderr.contains("device card is passed through"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: env.runtime("pvfio").directory))
        #expect(!FileManager.default.fileExists(atPath: env.stateRoot + "/pvfio-j2"))

        let loadvm = try env.writeGuestLab("plvm", tests: "  t: {run: \"true\"}", extra: "revert: loadvm")
        let refusedLoadvm = try env.qlab("run", loadvm, "--jobs", "2")
        #expect(refusedLoadvm.status == 2, "\(refusedLoadvm.output)")
        #expect(refusedLoadvm.stderr.contains("revert: loadvm"), "\(refusedLoadvm.stderr)")
        #expect(CancellationQEMUTests.lingering(env).isEmpty)

        let tooMany = try env.qlab("run", loadvm, "--jobs", "0")
        #expect(tooMany.status == 2, "\(tooMany.output)")
    }
}
