import Foundation
// Glibc: the floor qlab is measured against drives QEMU and its sockets with raw posix_spawn, waitpid, read and
// write, on purpose: no qlab layer between the benchmark and the system (see the hand and floor columns).
import LabCore
import Platform
import QMP

/// `qlab-bench lifecycle [--runs N] [--qlab PATH] [--baseline PATH]`: `qlab up` to QMP-ready
/// and `qlab down` to reaped, next to launching the same QEMU command line by
/// hand with a raw QMP client, interleaved in one run.
///
/// - hand: `posix_spawnp` of the argv `LabController.prepare` builds, connect
///   to the QMP socket until it answers (every 1 ms), greeting,
///   qmp_capabilities, query-status; then `quit` on that connection and a
///   blocking `waitpid`.
/// - qlab CLI: the qlab binary run as a user runs it (`qlab up LAB` until it
///   exits, then `qlab down NAME` until it exits, QEMU reaped by then).
/// - qlab library: `LabController.up` / `.down` in this process, which leaves
///   out the qlab process's own start (dynamic loading, Swift runtime, argument parsing).
///
/// - baseline CLI (`--baseline PATH`): the same as the qlab CLI with another
///   qlab binary (e.g. main built in its own scratch path), interleaved in the
///   same rounds, so a change is measured against its baseline under the same load.
///
/// The lab is bare: a blank qcow2 disk, q35, TCG, 64 MiB, in a temporary
/// QLAB_RUNTIME_DIR and QLAB_STATE_DIR. The supervisor's resident memory is
/// read from /proc/PID/status of the supervisor process (`qlab-supervisor`, or
/// `qlab _supervise` without it) while the lab runs.
enum LifecycleBench {
    static let labName = "bench-lifecycle"

    static func run(arguments: [String]) async throws {
        var runs = 10
        var qlabPath = BenchProcess.siblingExecutable("qlab")
        var baselinePath: String?
        var index = 0
        while index < arguments.count {
            let value = index + 1 < arguments.count ? arguments[index + 1] : ""
            switch arguments[index] {
            case "--runs": runs = try positive(value, "--runs")
            case "--qlab": qlabPath = value
            case "--baseline": baselinePath = value
            default: throw BenchError("unknown option \(arguments[index]); usage: qlab-bench lifecycle [--runs N] [--qlab PATH] [--baseline PATH]")
            }
            index += 2
        }
        guard access(qlabPath, X_OK) == 0 else {
            throw BenchError("no qlab executable at \(qlabPath): build it (swift build --product qlab) or pass --qlab PATH")
        }
        if let baselinePath, access(baselinePath, X_OK) != 0 {
            throw BenchError("no qlab executable at --baseline \(baselinePath)")
        }

        let directory = try BenchProcess.makeTemporaryDirectory("lifecycle")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        setenv("QLAB_RUNTIME_DIR", directory + "/run", 1)
        setenv("QLAB_STATE_DIR", directory + "/state", 1)
        let disk = directory + "/blank.qcow2"
        try BenchProcess.runTool(["qemu-img", "create", "-q", "-f", "qcow2", disk, "64M"])
        let labFile = directory + "/\(labName).yaml"
        try BenchLabFile.write(labFile, [
            "name: \(labName)",
            "machine: {type: q35, accel: tcg, memory: 64M, smp: 1}",
            "guests:",
            "  bare:",
            "    os: linux",
            "    disk: \(BenchLabFile.quoted(disk))",
        ])

        let controller = LabController(supervisorExecutable: qlabPath)
        let supervisorName = LabController.supervisorProgram(qlab: qlabPath) == qlabPath ? "qlab _supervise" : "qlab-supervisor"
        let runtime = controller.runtime(labName)
        // Whatever happens, nothing of ours stays running.
        var handQEMU: pid_t = 0
        defer {
            if handQEMU > 0 { BenchProcess.killAndReap(handQEMU) }
            BenchProcess.forceDown(runtime)
        }

        print("qlab-bench lifecycle: \(runs) rounds, bare lab (blank qcow2, q35, TCG, 64 MiB); hand launch, qlab CLI "
            + "and qlab library interleaved, order rotating; qlab \(qlabPath)")

        // Warm-up (page cache, overlay creation): one of each, not counted.
        var hand = Samples(), cli = Samples(), library = Samples(), baseline = Samples()
        var rss: [Double] = [], hwm: [Double] = [], pss: [Double] = [], privateMemory: [Double] = []
        var baselineRSS: [Double] = []
        var scratch = Samples()
        _ = try await cliCycle(qlabPath: qlabPath, labFile: labFile, runtime: runtime, into: &scratch)
        if let baselinePath { _ = try await cliCycle(qlabPath: baselinePath, labFile: labFile, runtime: runtime, into: &scratch) }
        let spec = try controller.prepare(lab: try Lab.load(path: labFile), options: LabController.UpOptions())
        try handCycle(argv: spec.argv, ram: spec.record.revert?.ramDirectory, runtime: runtime, log: directory + "/hand-qemu.log", pid: &handQEMU, into: &scratch)
        try await libraryCycle(controller, labFile: labFile, into: &scratch)

        let kinds = baselinePath == nil ? 3 : 4
        for round in 0..<runs {
            let order = (0..<kinds).map { ($0 + round) % kinds }
            for which in order {
                switch which {
                case 0:
                    let memory = try await cliCycle(qlabPath: qlabPath, labFile: labFile, runtime: runtime, into: &cli)
                    rss.append(memory.rss)
                    hwm.append(memory.hwm)
                    pss.append(memory.pss)
                    privateMemory.append(memory.private)
                case 1:
                    try handCycle(argv: spec.argv, ram: spec.record.revert?.ramDirectory, runtime: runtime, log: directory + "/hand-qemu.log", pid: &handQEMU, into: &hand)
                case 3:
                    baselineRSS.append(try await cliCycle(qlabPath: baselinePath!, labFile: labFile, runtime: runtime, into: &baseline).rss)
                default:
                    try await libraryCycle(controller, labFile: labFile, into: &library)
                }
            }
        }

        print(hand.line("hand launch (raw QMP)"))
        print(cli.line("qlab CLI (qlab up/down)"))
        print(library.line("qlab library (LabController)"))
        if let baselinePath {
            print(baseline.line("baseline CLI (--baseline)"))
            print(String(format: "baseline overhead ms: %.1f (up %+.1f, down %+.1f); supervisor rss MiB %.1f; baseline qlab \(baselinePath)",
                         baseline.total.median - hand.total.median, baseline.up.median - hand.up.median,
                         baseline.down.median - hand.down.median, Samples.Series(baselineRSS).median))
        }
        let overhead = cli.total.median - hand.total.median
        print(String(format: "overhead ms: %.1f", overhead))
        print(String(format: "  = median(qlab up + down) %.1f - median(hand up + down) %.1f; up %+.1f ms, down %+.1f ms; target under 50",
                     cli.total.median, hand.total.median, cli.up.median - hand.up.median, cli.down.median - hand.down.median))
        print(String(format: "  in-process library: overhead %.1f ms (up %+.1f, down %+.1f); CLI minus library: the qlab process's own start and exit, in up and in down",
                     library.total.median - hand.total.median, library.up.median - hand.up.median, library.down.median - hand.down.median))
        print(String(format: "supervisor rss MiB: %.1f", Samples.Series(rss).median))
        print(String(format: "  VmRSS of the supervisor (\(supervisorName)) 300 ms after up returned: median %.1f, max %.1f MiB; VmHWM max %.1f MiB; target under 15",
                     Samples.Series(rss).median, rss.max() ?? 0, hwm.max() ?? 0))
        print(String(format: "  of which private %.1f MiB, Pss %.1f MiB (smaps_rollup medians): the rest is shared, clean library pages",
                     Samples.Series(privateMemory).median, Samples.Series(pss).median))
    }

    /// Times of one way of bringing the lab up and down, per round.
    struct Samples {
        struct Series {
            var milliseconds: [Double] = []
            init(_ values: [Double] = []) { milliseconds = values }
            var median: Double { percentile(0.5) }
            func percentile(_ p: Double) -> Double {
                var samples = LatencySamples()
                samples.nanoseconds = milliseconds.map { UInt64(max(0, $0) * 1e6) }
                return samples.percentile(p) / 1000
            }
        }
        var up = Series(), down = Series(), total = Series()

        mutating func add(up: Duration, down: Duration) {
            self.up.milliseconds.append(up.seconds * 1000)
            self.down.milliseconds.append(down.seconds * 1000)
            total.milliseconds.append((up + down).seconds * 1000)
        }

        func line(_ label: String) -> String {
            label.padding(toLength: 30, withPad: " ", startingAt: 0)
                + String(format: "up median %6.1f p90 %6.1f ms   down median %6.1f p90 %6.1f ms   up+down median %6.1f p90 %6.1f ms",
                         up.median, up.percentile(0.9), down.median, down.percentile(0.9), total.median, total.percentile(0.9))
        }
    }

    /// `qlab up LAB`, then `qlab down NAME`, each timed to the command's exit.
    /// Returns the supervisor's memory (MiB) read in between: VmRSS and VmHWM
    /// (/proc/PID/status), Pss and Private_Clean + Private_Dirty (/proc/PID/smaps_rollup).
    static func cliCycle(
        qlabPath: String, labFile: String, runtime: LabRuntime, into samples: inout Samples
    ) async throws -> (rss: Double, hwm: Double, pss: Double, private: Double) {
        let output = (labFile as NSString).deletingLastPathComponent + "/qlab-cli.out"
        let clock = ContinuousClock()
        let start = clock.now
        let up = try BenchProcess.run([qlabPath, "up", labFile], output: output)
        let upTime = clock.now - start
        guard up == 0 else { throw BenchError("qlab up exited \(up): \(BenchProcess.text(output))") }
        // Written by the supervisor `qlab up` started (this runtime is reused across cycles).
        guard let record = try? runtime.records.reload() else { throw BenchError("qlab up returned but the lab has no record") }
        let cmdline = ProcessTable.commandLine(record.supervisorPID)
        guard cmdline.contains("_supervise") else { throw BenchError("pid \(record.supervisorPID) is not the supervisor: \(cmdline)") }
        try await Task.sleep(for: .milliseconds(300))
        let pid = record.supervisorPID
        let rss = BenchProcess.procKiB(pid, "status", "VmRSS") / 1024
        let hwm = BenchProcess.procKiB(pid, "status", "VmHWM") / 1024
        let pss = BenchProcess.procKiB(pid, "smaps_rollup", "Pss") / 1024
        let privateMemory = (BenchProcess.procKiB(pid, "smaps_rollup", "Private_Clean") + BenchProcess.procKiB(pid, "smaps_rollup", "Private_Dirty")) / 1024
        let downStart = clock.now
        let down = try BenchProcess.run([qlabPath, "down", runtime.name], output: output)
        let downTime = clock.now - downStart
        guard down == 0 else { throw BenchError("qlab down exited \(down): \(BenchProcess.text(output))") }
        guard !ProcessTable.isRunning(record.qemuPID) else { throw BenchError("qlab down returned with QEMU \(record.qemuPID) still running") }
        samples.add(up: upTime, down: downTime)
        return (rss, hwm, pss, privateMemory)
    }

    /// `LabController.up` and `.down` in this process.
    static func libraryCycle(_ controller: LabController, labFile: String, into samples: inout Samples) async throws {
        let clock = ContinuousClock()
        let start = clock.now
        let result = try await controller.up(labFile: labFile, options: LabController.UpOptions())
        let upTime = clock.now - start
        let downStart = clock.now
        _ = try await controller.down(labName)
        let downTime = clock.now - downStart
        // The supervisor, this process's child here, is reaped by `up`'s reaper once it ends.
        guard !ProcessTable.isRunning(result.record.qemuPID) else { throw BenchError("down returned with QEMU still running") }
        samples.add(up: upTime, down: downTime)
    }

    /// The same command line by hand: spawn, poll-connect, greeting,
    /// qmp_capabilities, query-status; quit and waitpid.
    /// `ram`: the RAM directory the argv's memory backend lives in (the fast
    /// revert method, the default), made as `up` makes it and removed after.
    static func handCycle(argv: [String], ram: String?, runtime: LabRuntime, log: String, pid: inout pid_t, into samples: inout Samples) throws {
        try runtime.makeDirectories()
        if let ram { _ = try runtime.ramDirectory(path: ram, create: true) }
        defer { if let ram { _ = runtime.removeRAMFiles(path: ram) } }
        let clock = ContinuousClock()
        let start = clock.now
        pid = try BenchProcess.spawn(argv, output: log)
        var client: RawQMPClient?
        while client == nil {
            client = try? RawQMPClient(path: runtime.qmpSocketPath)
            if client == nil {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    pid = 0
                    throw BenchError("QEMU exited during the hand launch: \(BenchProcess.text(log))")
                }
                if clock.now - start > .seconds(30) { throw BenchError("QEMU's QMP socket did not answer within 30 s") }
                usleep(1000)
            }
        }
        client!.roundTrip(#"{"execute":"query-status"}"# + "\n")
        let upTime = clock.now - start
        let downStart = clock.now
        client!.send(#"{"execute":"quit"}"# + "\n")
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
        pid = 0
        let downTime = clock.now - downStart
        client = nil
        runtime.removeRuntimeFiles()
        samples.add(up: upTime, down: downTime)
    }

    static func positive(_ text: String, _ option: String) throws -> Int {
        guard let value = Int(text), value > 0 else { throw BenchError("\(option) wants a positive number, got '\(text)'") }
        return value
    }
}

/// Processes for the benchmarks: spawn, wait, inspect.
enum BenchProcess {
    /// `/proc/self/exe`'s directory + `name`: a product built next to qlab-bench.
    static func siblingExecutable(_ name: String) -> String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (me as NSString).deletingLastPathComponent + "/" + name
    }

    static func makeTemporaryDirectory(_ label: String) throws -> String {
        var template = Array("/tmp/qlab-bench-\(label)-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw BenchError("mkdtemp failed: errno \(errno)") }
        return String(cString: made)
    }

    /// `posix_spawnp(3)`: stdin from /dev/null, stdout and stderr appended to `output`.
    static func spawn(_ argv: [String], output: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, nil, cArguments, environ)
        guard rc == 0 else { throw BenchError("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// Spawns and waits (`waitpid(2)`); returns the exit code (128 + signal when killed).
    static func run(_ argv: [String], output: String) throws -> Int32 {
        let pid = try spawn(argv, output: output)
        return wait(pid)
    }

    static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    /// Runs a tool to completion; its output is shown when it fails.
    static func runTool(_ argv: [String]) throws {
        let output = "/tmp/qlab-bench-tool-\(getpid()).out"
        defer { unlink(output) }
        let code = try run(argv, output: output)
        guard code == 0 else { throw BenchError("\(argv.joined(separator: " ")) exited \(code): \(text(output))") }
    }

    static func text(_ path: String) -> String {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").suffix(2000).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A `kB` field of /proc/PID/FILE (status: VmRSS, VmHWM; smaps_rollup: Pss, ...), 0 when unreadable.
    static func procKiB(_ pid: pid_t, _ file: String, _ field: String) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/\(file)", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            return Double(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "0") ?? 0
        }
        return 0
    }

    static func killAndReap(_ pid: pid_t) {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
    }

    /// After a failure: the lab's QEMU and supervisor killed, whatever the lab's state.
    static func forceDown(_ runtime: LabRuntime) {
        guard let record = try? runtime.records.reload() else { return }
        for pid in [record.qemuPID, record.supervisorPID] where pid > 0 && ProcessTable.isRunning(pid) {
            kill(pid, SIGKILL)
        }
        for pid in [record.qemuPID, record.supervisorPID] where pid > 0 {
            var status: Int32 = 0
            _ = waitpid(pid, &status, WNOHANG)
        }
        runtime.removeRuntimeFiles()
    }
}

/// Lab files the benchmarks write.
enum BenchLabFile {
    static func write(_ path: String, _ lines: [String]) throws {
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// A YAML double-quoted scalar (paths with spaces or colons stay one value).
    static func quoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
