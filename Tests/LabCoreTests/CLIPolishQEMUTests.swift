import Foundation
import LabCore
import Platform
import Testing

/// Issue 22's smaller CLI items against real QEMU 7.2 (TCG) and the test guest:
/// `events --follow`, `exec --ready`, `up --wait-ready`, `hmp`, `rm` of a running
/// lab and `rm --all`, `--jobs` progress and clones, completion of a stopped lab,
/// and the docs' first example test.
@Suite("CLI polish (real QEMU)", .serialized)
struct CLIPolishQEMUTests {
    /// `events --follow` prints only what comes after it starts (a previous boot's
    /// SHUTDOWN is not printed; plain `events` still has it), and ends, status 0,
    /// once its reader closes the pipe, with no event after that to write.
    @Test func eventsFollowStartsAtNowAndEndsWithItsReader() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("evf", tests: "  t: {run: \"true\"}")
        #expect(try env.qlab("up", file, "--paused").status == 0)
        #expect(try env.qlab("down", "evf").status == 0)
        #expect(try env.qlab("up", file, "--paused").status == 0)
        let history = try env.qlab("events", "evf")
        #expect(history.status == 0 && history.stdout.contains(" SHUTDOWN "), "the first boot's SHUTDOWN is in the log: \(history.output)")

        let follow = Process()
        let pipe = Pipe()
        follow.executableURL = URL(fileURLWithPath: QLabTestEnvironment.qlabExecutable)
        follow.arguments = ["events", "evf", "--follow"]
        follow.environment = env.environment
        follow.standardOutput = pipe
        follow.standardError = FileHandle.nullDevice
        try follow.run()
        defer { if follow.isRunning { kill(follow.processIdentifier, SIGKILL) } }
        try? pipe.fileHandleForWriting.close()
        let reader = FileDescriptor(rawValue: pipe.fileHandleForReading.fileDescriptor)

        // One event at a time until the follower prints one: it may start after the first.
        var first = ""
        let deadline = ContinuousClock.now + .seconds(60)
        var resume = true
        while first.isEmpty && ContinuousClock.now < deadline {
            #expect(try env.qlab("hmp", "evf", resume ? "cont" : "stop").status == 0)
            resume.toggle()
            if PollSet.readable(reader, within: .seconds(3)) {
                first = String(decoding: pipe.fileHandleForReading.availableData, as: UTF8.self)
            }
        }
        #expect(first.contains(" RESUME") || first.contains(" STOP"), "follow printed: \(first)")
        #expect(!first.contains("SHUTDOWN"), "an earlier boot's event was printed: \(first)")
        // The reader goes, as `head -1` does; no event comes after it.
        try pipe.fileHandleForReading.close()
        #expect(waitUntil(limit: .seconds(30)) { !follow.isRunning }, "events --follow still runs after its reader went")
        follow.waitUntilExit()
        #expect(follow.terminationReason == .exit && follow.terminationStatus == 0, "\(follow.terminationReason.rawValue) \(follow.terminationStatus)")

        // History on request: --since an hour ago has the first boot's SHUTDOWN; a future time nothing.
        let all = try env.qlab("events", "evf", "--since", "1h")
        #expect(all.stdout.contains(" SHUTDOWN "), "\(all.output)")
        let future = try env.qlab("events", "evf", "--since", "2099-01-01T00:00:00Z")
        #expect(future.status == 0 && future.stdout.isEmpty, "\(future.output)")
        let bad = try env.qlab("events", "evf", "--since", "yesterday")
        #expect(bad.status == 2 && bad.stderr.contains("--since 'yesterday': give an ISO 8601 time"), "\(bad.output)")
        #expect(try env.qlab("down", "evf").status == 0)
    }

    /// `exec --ready`: the ready wait has the guest's boot_timeout, --timeout the
    /// command alone (a 2 s limit no longer cuts the boot short); `hmp` prints text;
    /// `rm` of a running lab and `rm --all` keep it and say so.
    @Test func execReadyHMPAndRemoveOfARunningLab() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("exr", tests: "  t: {run: \"true\"}")
        #expect(try env.qlab("up", file).status == 0)
        // Booting takes longer than 2 s under TCG: the command, not the boot, times out.
        let slow = try env.qlab("exec", "exr", "--ready", "--timeout", "2", "--", "sleep", "10")
        #expect(slow.status == 124, "\(slow.output)")
        #expect(slow.stderr.contains("the guest command did not finish within 2 s: sleep 10"), "\(slow.stderr)")
        #expect(!slow.stderr.contains("ready text"), "\(slow.stderr)")
        let echo = try env.qlab("exec", "exr", "--ready", "--timeout", "20", "--", "echo", "hi")
        #expect(echo.status == 0 && echo.stdout == "hi\n", "\(echo.output)")

        let pci = try env.qlab("hmp", "exr", "info", "pci")
        #expect(pci.status == 0, "\(pci.output)")
        #expect(pci.stdout.contains("\n  Bus  0, device   0, function 0:\n") || pci.stdout.hasPrefix("  Bus  0, device   0, function 0:\n"), "\(pci.stdout.prefix(300))")
        #expect(!pci.stdout.contains("\r") && !pci.stdout.contains("\\r\\n"), "\(pci.stdout.prefix(300))")
        let pciJSON = try env.qlab("hmp", "exr", "--json", "info", "pci")
        #expect(pciJSON.stdout.hasPrefix("\"") && pciJSON.stdout.contains("\\r\\n"), "\(pciJSON.stdout.prefix(300))")

        let record = try #require(try env.runtime("exr").record)
        let rm = try env.qlab("rm", "exr")
        #expect(rm.status == 1, "\(rm.output)")
        #expect(rm.stderr == "qlab rm: lab exr is running (QEMU pid \(record.qemuPID), supervisor pid \(record.supervisorPID)); `qlab down exr` first, then `qlab rm exr`\n", "\(rm.stderr)")
        let all = try env.qlab("rm", "--all")
        #expect(all.status == 0, "\(all.output)")
        #expect(all.stderr == "qlab rm: kept lab exr: it is running (`qlab down exr` first)\n", "\(all.stderr)")
        #expect(FileManager.default.fileExists(atPath: env.runtime("exr").stateDirectory))
        #expect(try env.qlab("down", "exr").status == 0)
        let notRunning = try env.qlab("hmp", "exr", "info", "pci")
        #expect(notRunning.status == 3, "\(notRunning.output)")
        #expect(notRunning.stderr == "qlab hmp: lab exr is not running; start it with `qlab up exr` (its last lab file)\n", "\(notRunning.stderr)")
    }

    /// `up --wait-ready` returns once the guest is ready; a ready text that never
    /// comes is exit 124 after boot_timeout, and the lab stays up for `down`.
    @Test func upWaitReady() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("uwr", tests: "  t: {run: \"true\"}")
        let up = try env.qlab("up", file, "--wait-ready")
        #expect(up.status == 0, "\(up.output)")
        #expect(up.stdout.contains("guest linux ready after "), "\(up.stdout)")
        // Ready means the shell answers now: a command with a short limit runs at once.
        #expect(try env.qlab("exec", "uwr", "--timeout", "10", "--", "true").status == 0)
        #expect(try env.qlab("down", "uwr").status == 0)

        let never = try String(contentsOfFile: file, encoding: .utf8)
            .replacingOccurrences(of: "ready: qlab-guest-ready", with: "ready: qlab-never-printed")
            .replacingOccurrences(of: "boot_timeout: 180s", with: "boot_timeout: 8s")
        let neverFile = try env.writeLab("uwr", never)
        let late = try env.qlab("up", neverFile, "--wait-ready")
        #expect(late.status == 124, "\(late.output)")
        #expect(late.stderr.contains("no ready text \"qlab-never-printed\" on the guest console within 8 s"), "\(late.stderr)")
        #expect(try env.runtime("uwr").record != nil, "the lab stays up")
        #expect(try env.qlab("down", "uwr").status == 0)
        let both = try env.qlab("up", neverFile, "--wait-ready", "--foreground")
        #expect(both.status == 2, "\(both.output)")
    }

    /// `--jobs 2`: progress lines numbered 1..N in print order; the clone leaves
    /// no state and is never offered as "did you mean"; completion reads a stopped
    /// lab's file; the docs' first example tests pass on the test guest.
    @Test func jobsProgressClonesCompletionAndDocExamples() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let docs = QLabTestEnvironment.repositoryRoot + "/docs/"
        func inquiry(_ doc: String) throws -> String {
            let text = try String(contentsOfFile: docs + doc, encoding: .utf8)
            let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("  inquiry: {run: ") }, "\(doc) has no inquiry test")
            return String(line.dropFirst("  inquiry: ".count))
        }
        let file = try env.writeGuestLab("jpc", tests: """
              format-doc: \(try inquiry("lab-format.md"))
              guests-doc: \(try inquiry("guests.md"))
              slow: {run: "sleep 4; echo ok", expect: ok}
              quick: {run: "echo ok", expect: ok}
            """)
        let run = try env.qlab("run", file, "--jobs", "2")
        #expect(run.status == 0, "\(run.output)")
        let numbers = run.stdout.split(separator: "\n").compactMap { line -> Int? in
            guard line.hasPrefix("["), let slash = line.firstIndex(of: "/") else { return nil }
            return Int(line[line.index(after: line.startIndex)..<slash])
        }
        #expect(numbers == [1, 2, 3, 4], "\(run.stdout)")
        #expect(run.stdout.contains("format-doc: PASSED") && run.stdout.contains("guests-doc: PASSED"), "\(run.stdout)")
        let list = try env.qlab("list")
        #expect(list.stdout.contains("jpc ") && !list.stdout.contains("jpc-j"), "\(list.stdout)")
        #expect(!FileManager.default.fileExists(atPath: env.stateRoot + "/jpc-j2"), "the clone's state was left")

        // Completion of the stopped lab's name: its devices and tests, from its last lab file.
        let devices = try env.qlab("---completion", "hotplug", "--", "positional@1", "3", "0", "qlab", "hotplug", "jpc", "")
        #expect(devices.stdout == "scsi-lsi\n", "\(devices.output)")
        let tests = try env.qlab("---completion", "run", "--", "--test", "4", "1", "qlab", "run", "jpc", "--test", "g")
        #expect(tests.stdout == "guests-doc\n", "\(tests.output)")
        let guests = try env.qlab("---completion", "run", "--", "--guest", "4", "0", "qlab", "run", file, "--guest", "")
        #expect(guests.stdout == "linux\n", "\(guests.output)")

        // A clone's state left behind (a run killed by SIGKILL) is no "did you mean".
        try FileManager.default.createDirectory(atPath: env.stateRoot + "/jpc-j2", withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        #expect(try env.qlab("rm", "jpc").status == 0)
        let exec = try env.qlab("exec", "jpc", "--", "true")
        #expect(exec.status == 3, "\(exec.output)")
        #expect(exec.stderr == "qlab exec: no such lab jpc: give a lab file's path, or a name from `qlab list`\n", "\(exec.stderr)")
        let all = try env.qlab("rm", "--all")
        #expect(all.status == 0 && all.stdout.hasPrefix("lab jpc-j2 removed"), "\(all.output)")
        #expect(try env.qlab("list").stdout == "no labs\n")
    }
}
