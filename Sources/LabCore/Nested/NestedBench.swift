import Platform

/// The nested bench (issue 6): boots L1 from `labs/nested-bench.yaml` with
/// qlab's own lifecycle, drives its root shell over the serial console, runs
/// the host's qlab binary inside it against L1's real kernel, and checks what
/// that qlab printed. One L1 boot per bench guest (`bench`: vfio-pci
/// nointxmask=1, `control`: nointxmask=0); the scenarios of a boot run one
/// after another in it, each cleaning up its level-2 labs.
///
/// Every QEMU it starts ends with L1, which ``run(_:onEvent:)`` always takes
/// down (`qlab down`), also when a scenario fails or the boot does.
public struct NestedBench: Sendable {
    /// The bench lab (`labs/nested-bench.yaml`); its directory holds `nested/*.yaml`, the level-2 labs.
    public var labFile: String
    /// The qlab binary run inside L1 (the host's, seen through L1's 9p mount at /host).
    public var qlabExecutable: String
    public var controller: LabController

    public init(labFile: String, qlabExecutable: String, controller: LabController) {
        self.labFile = FileSystem.absolute(labFile)
        self.qlabExecutable = FileSystem.absolute(qlabExecutable)
        self.controller = controller
    }

    /// What happens, as it happens (for a live terminal report).
    public enum Event: Sendable {
        case booting(guest: String)
        case booted(guest: String, after: Duration, accel: String)
        case scenarioStarted(NestedScenario)
        case step(NestedStep)
        case scenarioFinished(NestedScenarioResult)
        case shutDown(NestedBootRecord)
    }

    public enum BenchError: Error, CustomStringConvertible {
        case unknownScenario(String)
        case missingFile(String, what: String)

        public var description: String {
            switch self {
            case .unknownScenario(let id):
                return "no scenario '\(id)'; the scenarios are: " + NestedScenario.all.map(\.id).joined(separator: ", ")
            case .missingFile(let path, let what):
                return "\(what) \(path) does not exist" + (path.contains("images/out") ? "; build it with images/build.sh" : "")
            }
        }
    }

    /// The scenarios for `ids` in run order (when empty: all but the measurements, ``NestedScenario/onlyWhenNamed``); throws on an unknown id.
    public static func select(_ ids: [String]) throws -> [NestedScenario] {
        for id in ids where NestedScenario.named(id) == nil { throw BenchError.unknownScenario(id) }
        return NestedScenario.all.filter { ids.isEmpty ? !$0.onlyWhenNamed : ids.contains($0.id) }
    }

    /// The level-2 labs' directory: `nested/` beside the bench lab.
    public var l2LabDirectory: String { Paths.directory(of: labFile) + "/nested" }

    /// Checks the files a run needs before anything starts.
    public func checkFiles() throws {
        let lab = try Lab.load(path: labFile)
        for guest in lab.guests { try lab.checkFiles(guest: guest.name) }
        for name in ["slot1", "slot2", "hotplug", "loop", "loop-megasas", "loop-reset", "plugfail", "hostscsi"] {
            let path = l2LabDirectory + "/" + name + ".yaml"
            guard FileSystem.exists(path) else { throw BenchError.missingFile(path, what: "the level-2 lab") }
            _ = try Lab.load(path: path)
        }
        guard FileSystem.isExecutable(qlabExecutable) else { throw BenchError.missingFile(qlabExecutable, what: "the qlab executable") }
    }

    /// Where a run keeps its console logs and report: `$STATE/nested-bench/nested-runs/UTC-STAMP`.
    public func newRunDirectory() throws -> String {
        let lab = try Lab.load(path: labFile)
        // `%Y%m%dT%H%M%SZ`: the ISO 8601 basic form of now.
        let stamp = UTCTime.iso8601Seconds(UTCTime.now()).filter { $0 != "-" && $0 != ":" }
        // The lab's state dir is made (or checked) private first; the run
        // directory below it may then be 0755.
        _ = try controller.runtime(lab.name).labStateDirectory(create: true)
        var path = controller.runtime(lab.name).stateDirectory + "/nested-runs/" + stamp
        var suffix = 1
        while FileSystem.entryExists(path) {
            suffix += 1
            path = controller.runtime(lab.name).stateDirectory + "/nested-runs/" + stamp + "-\(suffix)"
        }
        try FileSystem.makeDirectory(path, mode: 0o755)
        return path
    }

    /// Runs `scenarios` (see ``select(_:)``), booting L1 once per bench guest they need,
    /// or, `isolated`, once per scenario (each starts from a freshly booted L1).
    public func run(
        _ scenarios: [NestedScenario], runDirectory: String, isolated: Bool = false, onEvent: @escaping @Sendable (Event) -> Void
    ) async throws -> NestedReport {
        let started = ContinuousClock.now
        try checkFiles()
        let lab = try Lab.load(path: labFile)
        var boots: [NestedBootRecord] = []
        var results: [NestedScenarioResult] = []
        var groups: [[NestedScenario]] = []
        if isolated {
            groups = scenarios.map { [$0] }
        } else {
            var guests: [String] = []
            for scenario in scenarios where !guests.contains(scenario.boot) { guests.append(scenario.boot) }
            groups = guests.map { guest in scenarios.filter { $0.boot == guest } }
        }
        for group in groups {
            // Cancelled (SIGINT/SIGTERM): no further boot; the report says what ran.
            if Task.isCancelled { break }
            let guestName = group[0].boot
            let logName = isolated ? "\(guestName)-\(group[0].id)" : guestName
            let (boot, groupResults) = await runBoot(
                lab: lab, guestName: guestName, logName: logName, scenarios: group, runDirectory: runDirectory, onEvent: onEvent)
            boots.append(boot)
            results += groupResults
        }
        let report = NestedReport(labFile: labFile, runDirectory: runDirectory, boots: boots, scenarios: results, duration: started.duration(to: .now))
        try? FileSystem.writeJSON(runDirectory + "/report.json", report.json, mode: 0o644)
        return report
    }

    /// One L1 boot: up, console, scenarios, down (always), console log kept.
    func runBoot(
        lab: Lab, guestName: String, logName: String, scenarios: [NestedScenario], runDirectory: String,
        onEvent: @escaping @Sendable (Event) -> Void
    ) async -> (NestedBootRecord, [NestedScenarioResult]) {
        let started = ContinuousClock.now
        var boot = NestedBootRecord(guest: guestName, scenarios: scenarios.map(\.id), bootDuration: nil, duration: .zero, accel: nil, consoleLog: nil, error: nil)
        var results: [NestedScenarioResult] = []
        onEvent(.booting(guest: guestName))
        var record: LabRecord?
        var console: GuestConsole?
        // L1 belongs to this run: should qlab die, its supervisor takes it down.
        var ownership: LabOwnership?
        do {
            let guest = try lab.selectGuest(guestName)
            let up = try await controller.up(labFile: labFile, options: LabController.UpOptions(guest: guestName, owned: true))
            ownership = up.ownership
            record = up.record
            boot.accel = up.record.accel.accelerator.rawValue
            let connected = try GuestConsole.connect(runtime: up.runtime)
            console = connected
            do {
                try await connected.waitForReady(guest)
            } catch {
                throw NestedFailure.boot("\(error)")
            }
            boot.bootDuration = started.duration(to: .now)
            onEvent(.booted(guest: guestName, after: boot.bootDuration!, accel: boot.accel ?? "?"))
            let shell = NestedShell(console: connected) { onEvent(.step($0)) }
            try await prepareShell(shell)
            let context = NestedContext(shell: shell, l2Labs: l2LabsPathInL1(), runDirectory: runDirectory)
            context.benchExecutable = pathInL1(Paths.directory(of: qlabExecutable) + "/qlab-bench")
            var consoleLost: String?
            for scenario in scenarios {
                if let consoleLost {
                    results.append(NestedScenarioResult(
                        id: scenario.id, title: scenario.title, boot: guestName, outcome: .fail, duration: .zero, steps: [],
                        failure: "not run: \(consoleLost)"))
                    onEvent(.scenarioFinished(results.last!))
                    continue
                }
                onEvent(.scenarioStarted(scenario))
                let result = await runScenario(scenario, context: context)
                results.append(result)
                onEvent(.scenarioFinished(result))
                if result.steps.contains(where: { $0.error != nil }), !((try? await connected.probe()) ?? false) {
                    consoleLost = "L1's console stopped answering"
                }
            }
        } catch {
            boot.error = "\(error)"
            for scenario in scenarios where !results.contains(where: { $0.id == scenario.id }) {
                results.append(NestedScenarioResult(
                    id: scenario.id, title: scenario.title, boot: guestName, outcome: .fail, duration: .zero, steps: [],
                    failure: "L1 (\(guestName)): \(error)"))
            }
        }
        console?.close()
        // Run to its end even when cancelled.
        let (controller, name) = (controller, lab.name)
        _ = await shielded { try? await controller.down(name) }
        ownership?.release()
        boot.duration = started.duration(to: .now)
        if let log = record?.consoleLog, let offset = record?.consoleLogOffset {
            let kept = runDirectory + "/l1-\(logName).console.log"
            if let bytes = ConsoleLog.read(log, from: offset, limit: 64 << 20), (try? FileSystem.writeAtomically(kept, bytes, mode: 0o644)) != nil {
                boot.consoleLog = kept
            }
        }
        onEvent(.shutDown(boot))
        return (boot, results)
    }

    /// One scenario: group binding first when needed, its body, its clean-ups.
    func runScenario(_ scenario: NestedScenario, context: NestedContext) async -> NestedScenarioResult {
        let started = ContinuousClock.now
        var failure: String?
        do {
            if scenario.needsBoundGroup && !context.groupBound { try await NestedScenario.bindGroup(context) }
            try await scenario.body(context)
        } catch {
            failure = "\(error)"
        }
        do { try await context.shell.runCleanups() } catch { failure = failure ?? "clean-up: \(error)" }
        let steps = context.shell.takeSteps()
        if failure == nil, let first = steps.first(where: { !$0.cleanup && !$0.passed }) {
            let check = first.checks.first { !$0.passed }
            failure = "`\(first.command)`: " + (first.error ?? check.map { "expected: \($0.what)" } ?? "failed")
        }
        return NestedScenarioResult(
            id: scenario.id, title: scenario.title, boot: scenario.boot, outcome: failure == nil ? .pass : .fail,
            duration: started.duration(to: .now), steps: steps, failure: failure)
    }

    /// A host path as L1 sees it: the host root is mounted read-only at /host
    /// (L1's own /tmp and /run hide the host's in its root).
    func pathInL1(_ path: String) -> String { "/host" + path }

    /// `labs/nested` relative to the shell's working directory (the bench lab's parent directory).
    func l2LabsPathInL1() -> String {
        let labs = Paths.directory(of: labFile)
        let name = labs.split(separator: "/").last.map(String.init) ?? "labs"
        return name + "/nested"
    }

    /// The shell's environment. Each command runs in a subshell of the console's
    /// shell, so `qlab` is a small script first on L1's PATH (`/run/qlab/bin`, put
    /// there by the bench's /init) that runs the host's binary with a runtime and
    /// state directory in L1's RAM; the working directory is set in the shell itself.
    func prepareShell(_ shell: NestedShell) async throws {
        let workDirectory = Paths.directory(of: Paths.directory(of: labFile))
        try shell.console.sendLine("cd " + ShellQuoting.quote(pathInL1(workDirectory)))
        let setup = #"printf '#!/bin/sh\nexport QLAB_RUNTIME_DIR=/run/qlab-l2 QLAB_STATE_DIR=/tmp/qlab-l2-state\nexec %s "$@"\n' "#
            + ShellQuoting.quote(pathInL1(qlabExecutable)) + " > /run/qlab/bin/qlab && chmod 755 /run/qlab/bin/qlab && pwd && qlab --version"
        let result = try await shell.console.run(setup, timeout: .seconds(120))
        guard result.exitStatus == 0, result.output.contains(LabCore.version), result.output.contains(pathInL1(workDirectory)) else {
            throw NestedFailure.console("qlab does not run in L1 (\(pathInL1(qlabExecutable)) in \(pathInL1(workDirectory))): exit \(result.exitStatus): \(excerpt(result.output))")
        }
    }
}

extension NestedBench.BenchError: ExitStatusCarrying {
    /// 2 for a scenario that does not exist (what was typed), 1 otherwise.
    public var exitStatus: ExitStatus {
        if case .unknownScenario = self { return .usage }
        return .failed
    }
}
