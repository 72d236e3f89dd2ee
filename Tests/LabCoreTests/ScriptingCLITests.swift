import Foundation
import LabCore
import Platform
import QMP
import Testing

/// What scripts rely on: the exit-code table and lines reaching a pipe at once.
@Suite("Scripting: exit codes and pipes (real QEMU)", .serialized)
struct ScriptingCLITests {
    @Test func usageErrorsExitTwoAndHelpListsTheTable() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let bogus = try env.qlab("--no-such-option")
        #expect(bogus.status == ExitStatus.usage.rawValue, "argument parser errors exit 2, not 64")
        #expect(bogus.stderr.contains("--no-such-option"))
        let shard = try env.qlab("run", "--shard", "3/2", env.labDirectory + "/x.yaml")
        #expect(shard.status == ExitStatus.usage.rawValue)
        #expect(shard.stderr.contains("--shard"))
        let help = try env.qlab("--help")
        #expect(help.status == 0)
        for status in ExitStatus.allCases {
            #expect(help.stdout.contains(String(status.rawValue)), "--help lists exit code \(status.rawValue)")
        }
    }

    /// `qlab events LAB --follow | grep -m1 EVENT` returns as soon as the event arrives:
    /// the line is in the pipe while qlab is still following.
    @Test func eventsFollowWritesEachLineToAPipeAtOnce() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try LifecycleTests.bareLab(env, name: "piped")
        #expect(try env.qlab("up", lab, "--paused").status == 0)

        let follow = Process()
        follow.executableURL = URL(fileURLWithPath: QLabTestEnvironment.qlabExecutable)
        follow.arguments = ["events", "piped", "--follow"]
        follow.environment = env.environment
        let pipe = Pipe()
        follow.standardOutput = pipe
        follow.standardError = FileHandle.nullDevice
        try follow.run()
        defer {
            if follow.isRunning { follow.terminate() }
            follow.waitUntilExit()
        }
        // --follow prints what comes after it started: `cont` once it waits (its watches are set).
        #expect(waitUntil(limit: .seconds(60)) { EventsFollowTests.inotifyWatches(of: follow.processIdentifier) >= 2 }, "the follower never set its watches")
        #expect(try env.qlab("qmp", "piped", "cont").status == 0)

        // Read until a RESUME line arrives; the follower must still be running then.
        let reader = pipe.fileHandleForReading
        let found = await withCheckedContinuation { (continuation: CheckedContinuation<String?, Never>) in
            DispatchQueue.global().async {
                var text = ""
                while true {
                    let data = reader.availableData
                    if data.isEmpty { continuation.resume(returning: nil); return }
                    text += String(decoding: data, as: UTF8.self)
                    if let line = text.split(separator: "\n").first(where: { $0.contains("RESUME") }) {
                        continuation.resume(returning: String(line))
                        return
                    }
                }
            }
            // A safety bound, not a timing assertion: end the follower if nothing comes.
            DispatchQueue.global().asyncAfter(deadline: .now() + 60) { if follow.isRunning { follow.terminate() } }
        }
        #expect(found != nil, "the RESUME event reached the pipe")
        #expect(follow.isRunning, "the line arrived while qlab was still following, not at exit")
        #expect(try env.qlab("down", "piped").status == 0)
    }

    /// `qlab report merge` names the shards it lacks and exits 1 unless --partial;
    /// a missing file is "no such file".
    @Test func reportMergeNamesMissingShards() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let entries = (0..<3).map { TestRunEntry(guest: "g", test: "t\($0)", repeatIndex: 1, matrixIndex: $0) }
        func write(_ shard: String, _ indices: [Int]) throws -> String {
            let path = env.root + "/shard-" + shard.replacingOccurrences(of: "/", with: "of") + ".json"
            let results = indices.map { TestResult(entry: entries[$0], outcome: .passed, duration: 1) }
            try FileSystem.writeJSON(path, TestReport(lab: "m", startedAt: 1, duration: 1, shards: [shard], results: results).json)
            return path
        }
        let one = try write("1/3", [0])
        let three = try write("3/3", [2])
        #expect(TestReport(lab: "m", startedAt: 0, duration: 0, shards: ["1/3", "3/3"], results: []).missingShards == ["2/3"])
        #expect(TestReport(lab: "m", startedAt: 0, duration: 0, shards: [], results: []).missingShards == [])

        let refused = try env.qlab("report", "merge", one, three)
        #expect(refused.status == ExitStatus.failed.rawValue)
        #expect(refused.stderr.contains("2/3 missing"), "\(refused.stderr)")
        #expect(refused.stdout.isEmpty, "nothing merged without --partial")
        let partial = try env.qlab("report", "merge", "--partial", one, three)
        #expect(partial.status == 0, "\(partial.stderr)")
        #expect(partial.stderr.contains("partial"))
        let merged = try JSONValue.parse(partial.stdout)
        #expect(merged["results"]?.arrayValue?.count == 2)
        let complete = try env.qlab("report", "merge", one, try write("2/3", [1]), three)
        #expect(complete.status == 0, "\(complete.stderr)")

        let missing = try env.qlab("report", "merge", one, env.root + "/nosuch.json")
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("nosuch.json: no such file"), "\(missing.stderr)")
    }

    /// Every command on a lab name with no record says "no such lab" and exits 3, with a
    /// near name when there is one; a known but stopped lab is not an error for status/down.
    @Test func unknownLabExitsThreeWithASuggestion() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try LifecycleTests.bareLab(env, name: "bench-a")
        #expect(try env.qlab("up", lab, "--paused").status == 0)
        #expect(try env.qlab("down", "bench-a").status == 0)
        let commands: [[String]] = [
            ["status", "LAB"], ["events", "LAB"], ["qmp", "LAB", "query-status"], ["console", "LAB", "--log"],
            ["exec", "LAB", "--", "true"], ["snapshot", "save", "LAB", "t"], ["snapshot", "list", "LAB"],
            ["hotplug", "LAB", "d"], ["unplug", "LAB", "d"], ["reset", "LAB"], ["down", "LAB"],
        ]
        for command in commands {
            for name in ["nosuchlab", "bench-b"] {
                let arguments = command.map { $0 == "LAB" ? name : $0 }
                let result = try env.qlab(arguments)
                #expect(result.status == ExitStatus.noSuchLab.rawValue, "\(arguments): \(result.status) \(result.stderr)")
                #expect(result.stderr.contains("no such lab \(name)"), "\(arguments): \(result.stderr)")
                if name == "bench-b" {
                    #expect(result.stderr.contains("did you mean bench-a"), "\(arguments): \(result.stderr)")
                }
            }
        }
        #expect(!FileManager.default.fileExists(atPath: env.runtimeRoot + "/nosuchlab"))
        #expect(!FileManager.default.fileExists(atPath: env.stateRoot + "/nosuchlab"))
        // Known but stopped: status reports it, down stays idempotent; commands that need it running exit 3.
        #expect(try env.qlab("status", "bench-a").status == 0)
        #expect(try env.qlab("down", "bench-a").status == 0)
        let stopped = try env.qlab("qmp", "bench-a", "query-status")
        #expect(stopped.status == ExitStatus.noSuchLab.rawValue, "\(stopped.stderr)")
        #expect(stopped.stderr.contains("not running"))
        let reset = try env.qlab("reset", "bench-a")
        #expect(reset.status == ExitStatus.noSuchLab.rawValue, "\(reset.stderr)")
    }

    /// Shell completion (the protocol the generated scripts use) offers lab names,
    /// lab files and a lab's devices; the scripts are generated for all three shells.
    @Test func completionOffersLabsAndDevices() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try LifecycleTests.bareLab(env, name: "comp-a")
        #expect(try env.qlab("up", lab, "--paused").status == 0)
        defer { _ = try? env.qlab("down", "comp-a") }
        let file = try env.writeLab("comp-b", """
            name: comp-b
            devices:
              scsi-lsi: {emulated: {driver: lsi53c895a}}
              scsi-am: {emulated: {driver: am53c974}}
              mega: {emulated: {driver: megasas}}
            guests:
              g: {os: linux, kernel: /nonexistent}
            """)
        let labs = try env.qlab("---completion", "status", "--", "positional@0", "2", "4", "qlab", "status", "comp")
        #expect(labs.stdout.split(separator: "\n").contains("comp-a"), "\(labs.output)")
        let devices = try env.qlab("---completion", "hotplug", "--", "positional@1", "3", "5", "qlab", "hotplug", file, "scsi-")
        #expect(devices.stdout.split(separator: "\n").map(String.init) == ["scsi-lsi", "scsi-am"], "\(devices.output)")
        for shell in ["bash", "zsh", "fish"] {
            let script = try env.qlab("--generate-completion-script", shell)
            #expect(script.status == 0)
            #expect(script.stdout.contains("---completion"), "\(shell) completes through qlab itself")
        }
    }

    /// `qlab up NAME` starts a lab again from the lab file it last ran; an unknown name exits 3.
    @Test func upByNameUsesTheLastLabFile() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try LifecycleTests.bareLab(env, name: "again")
        #expect(try env.qlab("up", lab, "--paused").status == 0)
        let first = try #require(try env.runtime("again").record)
        #expect(try env.qlab("down", "again").status == 0)
        let byName = try env.qlab("up", "again", "--paused")
        #expect(byName.status == 0, "\(byName.stderr)")
        let second = try #require(try env.runtime("again").record)
        #expect(second.labFile == first.labFile)
        #expect(second.qemuPID != first.qemuPID)
        #expect(try env.qlab("down", "again").status == 0)
        let unknown = try env.qlab("up", "agian")
        #expect(unknown.status == ExitStatus.noSuchLab.rawValue)
        #expect(unknown.stderr.contains("did you mean again"), "\(unknown.stderr)")
        #expect(env.qemuProcesses().isEmpty)
    }

    /// `qlab run` boots on its own overlay: a snapshot the user saved on the lab survives a run.
    @Test func runKeepsTheUsersSnapshots() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("keep", devices: "  {}", tests: "  quick: {run: \"true\", timeout: 60s}")
        #expect(try env.qlab("up", file, "--paused").status == 0)
        let saved = try env.qlab("snapshot", "save", "keep", "mine")
        #expect(saved.status == 0, "\(saved.output)")
        #expect(try env.qlab("down", "keep").status == 0)
        let run = try env.qlab("run", file)
        #expect(run.status == 0, "\(run.output)")
        #expect(env.qemuProcesses().isEmpty)
        #expect(try env.qlab("up", "keep", "--paused").status == 0)
        let list = try env.qlab("snapshot", "list", "keep")
        #expect(list.stdout.contains("mine"), "the run left the user's snapshot alone: \(list.output)")
        #expect(!list.stdout.contains("qlab-ready"), "the run's own snapshot lives on the run's overlay")
        #expect(try env.qlab("down", "keep").status == 0)
    }

    /// `qlab rm` removes a stopped lab's state and leftovers; a running lab is refused.
    @Test func rmRemovesAStoppedLabsState() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try LifecycleTests.bareLab(env, name: "gone")
        #expect(try env.qlab("up", lab, "--paused").status == 0)
        let running = try env.qlab("rm", "gone")
        #expect(running.status == ExitStatus.failed.rawValue)
        #expect(running.stderr.contains("qlab down gone"), "\(running.stderr)")
        #expect(FileManager.default.fileExists(atPath: env.stateRoot + "/gone"))
        #expect(try env.qlab("down", "gone").status == 0)
        // A link planted inside the state dir is removed, never followed.
        let outside = env.root + "/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try "keep".write(toFile: outside + "/keep.txt", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: env.stateRoot + "/gone/link", withDestinationPath: outside)
        let removed = try env.qlab("rm", "gone")
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(removed.stdout.contains("lab gone removed"))
        #expect(!FileManager.default.fileExists(atPath: env.stateRoot + "/gone"))
        #expect(!FileManager.default.fileExists(atPath: env.runtimeRoot + "/gone.lock"))
        #expect(FileManager.default.fileExists(atPath: outside + "/keep.txt"))
        let again = try env.qlab("rm", "gone")
        #expect(again.status == ExitStatus.noSuchLab.rawValue, "\(again.stderr)")
        #expect(try env.qlab("status", "gone").status == ExitStatus.noSuchLab.rawValue)
    }

    /// `exec --timeout` bounds the whole command, waiting for the console included: right
    /// after `up` (the guest still booting) it ends within the limit (exit 1: the console is
    /// unusable, a failure of qlab's, from the table; the command never ran)    /// could not be run), not after three more probe rounds.
    @Test func execTimeoutBoundsTheWholeCommand() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("early", devices: "  {}", tests: "  t: {run: \"true\"}")
        #expect(try env.qlab("up", file).status == 0)
        let started = ContinuousClock.now
        let early = try env.qlab("exec", "early", "--timeout", "2", "--", "true")
        let took = ContinuousClock.now - started
        #expect(early.status == ExitStatus.failed.rawValue, "\(early.status): \(early.stderr)")
        #expect(early.stderr.contains("did not answer within 2s"), "\(early.stderr)")
        #expect(early.stderr.contains("use --ready"), "\(early.stderr)")
        // Not a speed figure: the old code took three probe rounds past the limit.
        #expect(took < .seconds(6), "exec --timeout 2 took \(took)")
        let usage = try env.qlab("exec", "early", "--via", "carrier-pigeon", "--", "true")
        #expect(usage.status == ExitStatus.usage.rawValue)
        #expect(try env.qlab("down", "early").status == 0)
    }

    /// `run`, `args` and `guest check` take a lab's name as `up`, `down` and `exec` do (one
    /// resolver, `LabRuntime.labFile(for:)`); a name qlab does not know is exit 3, as is
    /// `exec` on a lab that is not running.
    @Test func labNamesResolveForEveryCommand() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        for command in [["run", "nosuch"], ["args", "nosuch"], ["guest", "check", "nosuch"], ["exec", "nosuch", "--", "true"], ["down", "nosuch"]] {
            let result = try env.qlab(command)
            #expect(result.status == ExitStatus.noSuchLab.rawValue, "\(command): \(result.status) \(result.stderr)")
            #expect(result.stderr.contains("no such lab nosuch"), "\(command): \(result.stderr)")
        }
        let file = try LifecycleTests.bareLab(env, name: "named")
        #expect(try env.qlab("up", file, "--paused").status == 0)
        #expect(try env.qlab("down", "named").status == 0)
        // Stopped: its name still means its last lab file.
        let byName = try env.qlab("args", "named")
        let byFile = try env.qlab("args", file)
        #expect(byName.status == 0, "\(byName.stderr)")
        #expect(byName.stdout == byFile.stdout && !byName.stdout.isEmpty)
        let stopped = try env.qlab("exec", "named", "--", "true")
        #expect(stopped.status == ExitStatus.noSuchLab.rawValue, "exec on a stopped lab: \(stopped.status) \(stopped.stderr)")
        #expect(stopped.stderr.hasPrefix("qlab exec: "), "\(stopped.stderr)")
        // A name resolves for `run` too: the lab file is read (this one has no tests: bad input).
        let run = try env.qlab("run", "named")
        #expect(run.status == ExitStatus.usage.rawValue, "\(run.status) \(run.stderr)")
        #expect(!run.stderr.contains("no such lab"), "\(run.stderr)")
    }
}
