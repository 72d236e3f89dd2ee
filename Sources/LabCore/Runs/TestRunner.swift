import Logging
import Platform

/// What a run reports while it goes, for a progress display.
public enum TestRunEvent: Sendable {
    case started(total: Int)
    case guestBooting(guest: String)
    case guestReady(guest: String, seconds: Double)
    /// The guest did not boot; `reason` says why (no ready text within N s, QEMU's exit).
    case guestBootFailed(guest: String, seconds: Double, reason: String)
    case entryStarted(TestRunEntry, index: Int, total: Int)
    case entryFinished(TestResult, index: Int, total: Int)
    /// Something worth a line of its own: a restart, a hook's failure.
    case note(String)
}

/// `qlab run`: for each guest, boot once to `ready` and save the ready
/// snapshot (strategy snapshot); then for each test and repeat: revert,
/// attach the lab's hotplug devices, rescan, run the test with its timeout,
/// judge it. Strategy reset uses a system_reset instead of a revert. A crash,
/// hang or timeout is recorded with its diagnosis and console tail, the guest
/// is restarted, and the loop goes on. A guest that does not boot is a
/// `boot` entry (an error with the reason and that boot's console tail) and
/// the entry it booted for is `skipped`; the next entry boots it once more,
/// and after a second failed boot the guest's remaining entries are `skipped`.
///
/// Cancelling the task that runs ``run()`` (``StopRequest/cancelling(_:)``)
/// stops the current step (a hook's whole process group is killed), takes
/// the lab down and returns the report so far, the rest marked `cancelled`.
/// The lab belongs to the run: should this process die, its supervisor takes
/// QEMU down by itself (``LabOwnership``).
public final class TestRunner: Sendable {
    public struct Options: Sendable {
        public var guests: [String] = []
        public var tests: [String] = []
        public var repeats = 1
        public var shard: Shard?
        /// The snapshot every run starts from.
        public var readyTag = "qlab-ready"
        public var transport: GuestTransport = .auto
        /// Workers (`--jobs`): above 1, the lab and clones of it at the ready
        /// snapshot run the matrix together (``runParallel(_:)``).
        public var jobs = 1
        /// What cancels the run, if any: its second request makes the clean-up hurry (SIGKILL).
        public var stop: StopRequest?
        /// Where a run that did not pass saves its guest's screen (guests with a display); nil: nowhere.
        public var screenshotDirectory: String?
        public init() {}
    }

    public let controller: LabController
    public let labFile: String
    public let lab: Lab
    public let options: Options
    let observe: @Sendable (TestRunEvent) -> Void

    public init(controller: LabController, labFile: String, options: Options, observe: @escaping @Sendable (TestRunEvent) -> Void = { _ in }) throws {
        self.controller = controller
        self.labFile = labFile
        self.lab = try Lab.load(path: labFile)
        self.options = options
        self.observe = observe
    }

    public func matrix() throws -> TestMatrix {
        try TestMatrix(lab: lab, guests: options.guests, tests: options.tests, repeats: options.repeats, shard: options.shard)
    }

    /// A booted guest being tested.
    final class BootedGuest: @unchecked Sendable {
        let guest: LabGuest
        let session: LabSession
        let console: GuestConsole
        /// The agent or the console; a fast revert reconnects the agent.
        var commands: any GuestSession
        let strategy: Strategy
        /// Held until the lab is down.
        let ownership: LabOwnership?
        var freshBoot = true

        init(guest: LabGuest, session: LabSession, console: GuestConsole, commands: any GuestSession, strategy: Strategy, ownership: LabOwnership?) {
            self.guest = guest
            self.session = session
            self.console = console
            self.commands = commands
            self.strategy = strategy
            self.ownership = ownership
        }
    }

    /// Runs the matrix. Throws only for what stops the whole run (a bad
    /// selection, the lab already running); everything else is a result,
    /// cancellation too (``TestReport/wasCancelled``).
    public func run() async throws -> TestReport {
        let matrix = try matrix()
        let runtime = controller.runtime(lab.name)
        if let record = runtime.record, runtime.liveQEMU(record) != nil {
            throw LabError.alreadyRunning(lab: lab.name, pid: record.qemuPID, supervisorPID: runtime.liveSupervisor(record))
        }
        if options.jobs > 1 {
            if let obstacle = Self.parallelObstacle(lab: lab, guests: options.guests) { throw TestRunError.jobsRefused(obstacle) }
            return try await runParallel(matrix)
        }
        let started = wallClockSeconds()
        let clock = ContinuousClock.now
        let total = matrix.entries.count
        observe(.started(total: total))
        var results: [TestResult] = []
        var boots: [GuestBoot] = []
        // What the report says the run used: the first good boot's QEMU and accelerator.
        var qemuVersion: String?
        var accelerator: String?
        for (guestName, entries) in matrix.byGuest {
            let guest = try lab.selectGuest(guestName)
            var booted: BootedGuest?
            var bootFailure: String?
            var failedBoots = 0
            for entry in entries {
                let index = results.filter { !$0.isBoot }.count + 1
                if Task.isCancelled {
                    results.append(TestResult(entry: entry, outcome: .cancelled, duration: 0, message: "not run: the run was cancelled"))
                    continue
                }
                observe(.entryStarted(entry, index: index, total: total))
                var result: TestResult
                // A guest gets a second boot (QEMU may have been killed from outside), not a third.
                if booted == nil && failedBoots < 2 {
                    let bootStarted = wallClockSeconds()
                    do {
                        let current = try await boot(guest, before: entry)
                        booted = current
                        boots.append(GuestBoot(guest: guest.name, startedAt: bootStarted, seconds: wallClockSeconds() - bootStarted, ready: true))
                        if qemuVersion == nil { qemuVersion = await Self.qemuVersion(of: current) }
                        accelerator = accelerator ?? current.session.record.accel.accelerator.rawValue
                    } catch let failure as BootFailure where !Task.isCancelled {
                        boots.append(GuestBoot(guest: guest.name, startedAt: bootStarted, seconds: failure.seconds, ready: false))
                        failedBoots += 1
                        bootFailure = failure.message
                        observe(.guestBootFailed(guest: guest.name, seconds: failure.seconds, reason: failure.message))
                        results.append(failure.result(guest: guest.name, before: entry))
                    } catch {
                        // Cancelled while booting.
                    }
                }
                if Task.isCancelled {
                    result = TestResult(entry: entry, outcome: .cancelled, duration: 0, message: "cancelled while the guest booted")
                } else if let current = booted {
                    let (outcome, healthy) = await runEntry(entry, on: current, index: index, total: total)
                    result = outcome
                    if !healthy && !Task.isCancelled {
                        observe(.note("restarting guest \(guest.name) after \(outcome.outcome.rawValue) in \(entry.displayName)"))
                        await shutDown(current)
                        booted = nil
                    }
                } else {
                    result = TestResult(entry: entry, outcome: .skipped, duration: 0,
                                        message: "not run: " + (bootFailure ?? "guest \(guest.name) did not boot"))
                }
                results.append(result)
                observe(.entryFinished(result, index: index, total: total))
            }
            await shutDown(booted)
        }
        return TestReport(
            lab: lab.name, startedAt: started, duration: (ContinuousClock.now - clock).inSeconds,
            shards: options.shard.map { [$0.description] } ?? [], results: results, boots: boots, qemuVersion: qemuVersion,
            accelerator: accelerator)
    }

    // MARK: Guest lifecycle

    /// Why a guest did not boot, with that boot's console tail; the lab is down again.
    struct BootFailure: Error {
        var message: String
        var diagnoses: [Diagnosis]
        var consoleTail: String
        var seconds: Double
        /// The guest's screen when it did not boot (a guest with a display).
        var screenshot: String?

        /// The boot's entry in the report: an error before `entry`, the run that needed the boot.
        func result(guest: String, before entry: TestRunEntry) -> TestResult {
            var result = TestResult(
                entry: TestRunEntry.boot(of: guest, before: entry), outcome: .error, duration: seconds,
                message: message, diagnoses: diagnoses, consoleTail: consoleTail, steps: [("boot", seconds)])
            result.screenshot = screenshot
            return result
        }
    }

    /// Boots `guest` to its ready state; throws ``BootFailure`` (or
    /// `CancellationError` when the run is cancelled meanwhile).
    func boot(_ guest: LabGuest, before entry: TestRunEntry? = nil) async throws -> BootedGuest {
        observe(.guestBooting(guest: guest.name))
        let begin = ContinuousClock.now
        func failure(_ message: String, diagnoses: [Diagnosis] = [], tail: String = "") -> BootFailure {
            BootFailure(message: message, diagnoses: diagnoses, consoleTail: tail, seconds: (ContinuousClock.now - begin).inSeconds)
        }
        let up: LabController.UpResult
        do {
            up = try await controller.up(lab: lab, options: Self.upOptions(guest))
        } catch {
            await shutDown(nil)
            if Task.isCancelled { throw CancellationError() }
            var failed = failure("QEMU did not start: \(error)")
            if case .launchFailed(_, let exit, let qemuOutput, let diagnoses) = error as? LabError {
                failed = failure("QEMU did not start: it \(exit)", diagnoses: diagnoses, tail: qemuOutput)
            }
            throw failed
        }
        // This boot's console output only: the log holds earlier boots too.
        let bootTail = { () -> String in
            guard let path = up.record.consoleLog else { return "" }
            return ConsoleLog.tail(path, bytes: 2048, since: up.record.consoleLogOffset)
        }
        var session: LabSession?
        do {
            session = try await LabSession.open(runtime: up.runtime)
            let console = try GuestConsole.connect(runtime: up.runtime)
            do {
                // The firmware's screen text first (while the serial console is logged meanwhile).
                if let text = guest.firmwareReady {
                    try await GuestScreen(session: session!).waitForText(text, timeout: guest.bootTimeout)
                }
                // What is left of boot_timeout after the firmware text.
                try await console.waitForReady(guest, timeout: guest.firmwareReady == nil ? nil : max(.milliseconds(1), guest.bootTimeout - (ContinuousClock.now - begin)))
            } catch {
                console.close()
                throw error
            }
            var commands: any GuestSession = console
            if options.transport != .console, FileSystem.entryExists(up.runtime.agentSocketPath),
                let agent = try? await GuestConnection.open(runtime: up.runtime, transport: .agent)
            {
                commands = agent
            }
            let strategy = lab.effectiveStrategy(for: guest)
            if strategy == .snapshot {
                _ = try await session!.saveSnapshot(options.readyTag, options: SnapshotOptions(replace: true))
            }
            observe(.guestReady(guest: guest.name, seconds: (ContinuousClock.now - begin).inSeconds))
            return BootedGuest(guest: guest, session: session!, console: console, commands: commands, strategy: strategy, ownership: up.ownership)
        } catch {
            let cancelled = Task.isCancelled
            var message = "\(error)"
            var diagnoses: [Diagnosis] = []
            if case GuestError.timeout(let what, _, _) = error {
                // The whole boot_timeout: the wait for `ready` gets what the firmware text left of it.
                message = "no \(what) within \(Self.wholeSeconds(guest.bootTimeout.inSeconds)) s (boot_timeout)"
            }
            if case GuestScreen.ScreenError.textNotShown(let text, let seconds, _) = error {
                message = "no firmware text \"\(text)\" on the screen within \(Self.wholeSeconds(seconds)) s (boot_timeout)"
            }
            if !cancelled, let exit = await Self.exitOfThisBoot(up.runtime, startedAt: up.record.startedAt) {
                message = "QEMU \(exit.exitDescription) while the guest booted" + (message.isEmpty ? "" : " (\(message))")
                diagnoses = exit.diagnoses
            }
            let tail = bootTail()
            var screenshot: String?
            if !cancelled, let session, let entry {
                screenshot = await saveScreenshot(session, guest: guest, entry: TestRunEntry.boot(of: guest.name, before: entry))
            }
            session?.close()
            await takeDown(ownership: up.ownership)
            if cancelled || Task.isCancelled { throw CancellationError() }
            var failed = failure("guest \(guest.name) did not boot: " + message, diagnoses: diagnoses, tail: tail)
            failed.screenshot = screenshot
            throw failed
        }
    }

    /// QEMU's `query-version` as the report says it: "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)".
    static func qemuVersion(of booted: BootedGuest) async -> String? {
        guard let version = try? await booted.session.qmp.queryVersion() else { return nil }
        return version.description + (version.package.isEmpty ? "" : " (\(version.package.trimmingSpaces()))")
    }

    /// How a run starts a guest's lab (`qlab guest check` starts it the same way): a fresh
    /// overlay of the run's own, and the lab owned by the caller.
    static func upOptions(_ guest: LabGuest) -> LabController.UpOptions {
        LabController.UpOptions(guest: guest.name, overlays: .testRun, owned: true)
    }

    /// QEMU's exit record when QEMU of the boot that started at `startedAt` is gone (nil while it runs).
    static func exitOfThisBoot(_ runtime: LabRuntime, startedAt: Double) async -> ExitRecord? {
        // Re-read: the supervisor rewrites the record when a fast revert replaces QEMU.
        if let record = try? runtime.records.reload(), runtime.liveQEMU(record) != nil { return nil }
        return await runtime.exitRecord(since: startedAt, waiting: .seconds(5))
    }

    /// "20" for 20 s, "2.5" for 2.5 s.
    static func wholeSeconds(_ seconds: Double) -> String {
        guard seconds.isFinite, abs(seconds) < 1e12 else { return "?" }
        let tenths = Int((seconds * 10).rounded())
        return tenths % 10 == 0 ? String(tenths / 10) : "\(tenths / 10).\(abs(tenths % 10))"
    }

    /// Closes `booted`'s connections and takes lab `name` (default: the lab) down.
    func shutDown(_ booted: BootedGuest?, name: String? = nil) async {
        if let booted {
            booted.commands.close()
            booted.console.close()
            booted.session.close()
        }
        await takeDown(name ?? lab.name, ownership: booted?.ownership)
    }

    /// `down`, run to its end even when the run is cancelled (hurried by a
    /// second stop request); then the lab is let go of.
    func takeDown(_ name: String? = nil, ownership: LabOwnership?) async {
        let (controller, name, stop) = (controller, name ?? lab.name, options.stop)
        _ = await shielded { try? await controller.down(name, stop: stop) }
        ownership?.release()
    }

    // MARK: One run

    /// Runs one entry; `healthy` is false when the guest must be restarted.
    func runEntry(_ entry: TestRunEntry, on booted: BootedGuest, index: Int, total: Int) async -> (TestResult, healthy: Bool) {
        let test = lab.test(named: entry.test)!
        let begin = ContinuousClock.now
        var steps: [(String, Double)] = []
        func step<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
            let start = ContinuousClock.now
            defer {
                let seconds = (ContinuousClock.now - start).inSeconds
                steps.append((name, seconds))
                LabCoreLog.logger.debug("step \(name) of \(entry.guest)/\(entry.displayName): \(seconds) s")
            }
            return try await body()
        }
        func finish(_ outcome: TestOutcome, status: Int32? = nil, output: String = "", message: String = "", diagnoses: [Diagnosis] = [], tail: String = "") -> TestResult {
            TestResult(entry: entry, outcome: outcome, duration: (ContinuousClock.now - begin).inSeconds, exitStatus: status, output: output,
                       message: message, diagnoses: diagnoses, consoleTail: tail, steps: steps)
        }
        let environment = hookEnvironment(entry, booted: booted, index: index, total: total)
        // Where this run's console output begins: its tail shows nothing of earlier runs.
        let consoleLog = booted.session.record.consoleLog
        let logOffset = consoleLog.map(ConsoleLog.size) ?? 0
        func runTail() -> String {
            guard let consoleLog else { return booted.console.tail() }
            return ConsoleLog.tail(consoleLog, bytes: 2048, since: logOffset)
        }
        func cancelled() -> TestResult {
            let during = steps.last.map { " during \($0.0)" } ?? ""
            return finish(.cancelled, message: "cancelled" + during)
        }

        do {
            if let hook = lab.hooks.beforeEach {
                let outcome = try await step("before_each") {
                    try await HostHook.run(hook, directory: lab.directory, environment: environment, timeout: lab.hooks.timeout)
                }
                if Task.isCancelled { return (cancelled(), false) }
                if !outcome.succeeded {
                    return (finish(.error, output: outcome.output, message: "before_each hook " + Self.describe(outcome)), true)
                }
            }
            try await prepare(booted, step: step)
            if Task.isCancelled { return (cancelled(), false) }
            // A test may only read the screen (screen_expect: without run:).
            let result = test.run.isEmpty
                ? GuestCommandResult(output: "", exitStatus: test.status, duration: .zero)
                : try await step("test") { try await booted.commands.run(test.run, timeout: test.timeout) }
            if Task.isCancelled { return (cancelled(), false) }
            var problems: [String] = []
            if result.exitStatus != test.status {
                problems.append("exit status \(result.exitStatus) (expected \(test.status))")
            }
            for text in test.expect where !result.output.contains(text) {
                problems.append("output lacks \"\(text)\"")
            }
            var screenText = ""
            if !test.screenExpect.isEmpty {
                try await step("screen") {
                    let screen = GuestScreen(session: booted.session)
                    for text in test.screenExpect {
                        do {
                            try await screen.waitForText(text, timeout: test.timeout)
                        } catch GuestScreen.ScreenError.textNotShown(_, _, let shown) {
                            problems.append("the screen did not show \"\(text)\" within \(Self.wholeSeconds(test.timeout.inSeconds)) s")
                            screenText = shown
                        }
                    }
                }
            }
            var tail = problems.isEmpty ? "" : runTail()
            if !screenText.isEmpty { tail += (tail.isEmpty ? "" : "\n") + "--- screen ---\n" + screenText }
            var final = finish(problems.isEmpty ? .passed : .failed, status: result.exitStatus, output: result.output,
                               message: problems.joined(separator: "; "), tail: tail)
            if !problems.isEmpty { final.screenshot = await saveScreenshot(booted.session, guest: booted.guest, entry: entry) }
            if let hook = lab.hooks.afterEach {
                var env = environment
                env["QLAB_RESULT"] = final.outcome.rawValue
                let outcome = try await step("after_each") {
                    try await HostHook.run(hook, directory: lab.directory, environment: env, timeout: lab.hooks.timeout)
                }
                final.steps = steps
                if outcome.cancelled {
                    final.outcome = .cancelled
                    final.message = (final.message.isEmpty ? "" : final.message + "; ") + "cancelled during after_each"
                } else if !outcome.succeeded {
                    final.outcome = .error
                    final.message = (final.message.isEmpty ? "" : final.message + "; ") + "after_each hook " + Self.describe(outcome)
                }
            }
            return (final, true)
        } catch where Task.isCancelled {
            return (cancelled(), false)
        } catch let error as GuestError {
            if case .commandTimeout(_, let seconds, let recovered, _) = error {
                var result = finish(.timeout, message: "the test did not end within \(Self.wholeSeconds(seconds)) s" + (recovered ? "" : "; the console did not recover"),
                                    diagnoses: [], tail: runTail())
                result.screenshot = await saveScreenshot(booted.session, guest: booted.guest, entry: entry)
                return (result, recovered)
            }
            let (message, diagnoses) = await explainBreakage(error, booted: booted)
            var result = finish(.error, message: message, diagnoses: diagnoses, tail: runTail())
            result.screenshot = await saveScreenshot(booted.session, guest: booted.guest, entry: entry)
            return (result, false)
        } catch {
            let (message, diagnoses) = await explainBreakage(error, booted: booted)
            var result = finish(.error, message: message, diagnoses: diagnoses, tail: runTail())
            result.screenshot = await saveScreenshot(booted.session, guest: booted.guest, entry: entry)
            return (result, false)
        }
    }

    /// Saves the guest's screen as `LAB-GUEST-TEST-N.png` in the screenshot directory, for a
    /// run that did not pass; nil when the guest has no display, there is no directory, or
    /// QEMU is gone (a note says why when QEMU answered but the picture could not be saved).
    func saveScreenshot(_ session: LabSession, guest: LabGuest, entry: TestRunEntry) async -> String? {
        guard let directory = options.screenshotDirectory, lab.display(for: guest) != .none, !Task.isCancelled else { return nil }
        if let record = session.runtime.record, session.runtime.liveQEMU(record) == nil { return nil }
        let name = [lab.name, entry.guest, entry.test, String(entry.isBoot ? entry.matrixIndex : entry.repeatIndex)]
            .map(Self.fileNamePart).joined(separator: "-") + ".png"
        let path = directory + "/" + name
        do {
            try await GuestScreen(session: session).saveScreenshot(to: path)
            observe(.note("screenshot of \(entry.guest) \(entry.isBoot ? "boot" : entry.displayName): \(path)"))
            return path
        } catch {
            observe(.note("no screenshot of \(entry.guest): \(error)"))
            return nil
        }
    }

    /// Letters, digits, `.`, `_` and `-` of a name; anything else becomes `_`.
    static func fileNamePart(_ text: String) -> String {
        String(text.unicodeScalars.map { s -> Character in
            s.isASCII && (s.properties.isAlphabetic || ("0"..."9").contains(s) || s == "." || s == "_" || s == "-") ? Character(s) : "_"
        })
    }

    /// Brings the guest to a clean state with the devices attached and found.
    func prepare(_ booted: BootedGuest, step: (String, () async throws -> Void) async throws -> Void) async throws {
        let hotplug = try booted.session.hotplugDeviceNames()
        switch booted.strategy {
        case .snapshot:
            // The step says the method ("revert fast": a fresh QEMU; "revert loadvm": in place).
            let method: RevertMethod = booted.session.hasRAMImage(options.readyTag) ? .fast : .loadvm
            try await step("revert \(method.rawValue)") {
                _ = try await booted.session.revert(to: options.readyTag, attaching: hotplug)
                booted.console.skipReceived()
            }
            if method == .fast, !(booted.commands is GuestConsole) {
                // The guest agent's connection went with the old QEMU: reconnect by path.
                booted.commands.close()
                booted.commands = (try? await GuestConnection.open(runtime: booted.session.runtime, transport: .agent)) ?? booted.console
            }
        case .reset:
            if !booted.freshBoot {
                try await step("reset") {
                    let offset = booted.session.record.consoleLog.flatMap(FileSystem.size) ?? 0
                    // Hotplugged cards go first, so the next run gets fresh ones (and fresh
                    // disk overlays); the reset that completes their unplug is the reboot.
                    let attached = hotplug.filter { booted.session.currentDeviceState($0) == .hotplug }
                    if attached.isEmpty {
                        _ = try await booted.session.reset()
                    } else {
                        _ = try await booted.session.detach(devices: attached, policy: .resetAtOnce)
                    }
                    try await booted.console.waitForReady(booted.guest, since: offset)
                }
            }
            if !hotplug.isEmpty {
                try await step("attach") { _ = try await booted.session.attach(devices: hotplug) }
            }
        }
        booted.freshBoot = false
        if !hotplug.isEmpty, let rescan = booted.guest.effectiveRescan {
            try await step("rescan") {
                let result = try await booted.commands.run(rescan, timeout: .seconds(120))
                if result.exitStatus != 0 {
                    throw TestRunError.rescanFailed(status: result.exitStatus, output: result.output)
                }
            }
        }
    }

    /// Why the guest broke: QEMU's exit and its diagnosis when QEMU is gone.
    func explainBreakage(_ error: Error, booted: BootedGuest) async -> (String, [Diagnosis]) {
        var diagnoses = (error as? SnapshotError)?.diagnoses ?? (error as? DeviceError)?.diagnoses ?? []
        let runtime = booted.session.runtime
        var message = "\(error)"
        // Reloaded: the supervisor rewrites the record when it restarts QEMU, and removes it once QEMU is gone.
        if let record = (try? runtime.records.reload()) ?? Optional(booted.session.record), runtime.liveQEMU(record) == nil {
            if let exit = await runtime.exitRecord(since: record.startedAt, waiting: .seconds(5)) {
                message = "QEMU \(exit.exitDescription) during the test (\(error))"
                diagnoses += exit.diagnoses
            } else {
                message = "QEMU ended during the test (\(error))"
            }
        }
        return (message, diagnoses)
    }

    func hookEnvironment(_ entry: TestRunEntry, booted: BootedGuest, index: Int, total: Int) -> [String: String] {
        var env = controller.environment
        env["QLAB_LAB"] = lab.name
        // The lab that runs it: LAB, or a --jobs clone LAB-jK.
        env["QLAB_WORKER"] = booted.session.runtime.name
        env["QLAB_LAB_FILE"] = lab.file
        env["QLAB_GUEST"] = entry.guest
        env["QLAB_GUEST_OS"] = booted.guest.os.rawValue
        env["QLAB_TEST"] = entry.test
        env["QLAB_REPEAT"] = String(entry.repeatIndex)
        env["QLAB_RUN_INDEX"] = String(index)
        env["QLAB_RUN_TOTAL"] = String(total)
        env["QLAB_QMP_SOCKET"] = booted.session.runtime.qmpSocketPath
        env["QLAB_CONSOLE_LOG"] = booted.session.record.consoleLog ?? ""
        env["QLAB_DEVICES"] = lab.devices.map(\.name).joined(separator: " ")
        env["QLAB_PASSTHROUGH"] = booted.session.record.passthroughHosts.map(\.host).joined(separator: " ")
        return env
    }

    static func describe(_ outcome: CapturedRun) -> String {
        if outcome.timedOut { return "timed out" }
        return "failed (\(outcome.exit?.description ?? "unknown")): " + outcome.output.suffix(400)
    }
}

public enum TestRunError: Error, Sendable, CustomStringConvertible {
    case rescanFailed(status: Int32, output: String)
    /// `--jobs N` for a lab that cannot be cloned (``TestRunner/parallelObstacle(lab:guests:)``): bad input.
    case jobsRefused(String)

    public var description: String {
        switch self {
        case .rescanFailed(let status, let output):
            return "the guest's rescan command failed with status \(status): \(output.suffix(300))"
        case .jobsRefused(let why):
            return "--jobs: \(why)"
        }
    }
}
