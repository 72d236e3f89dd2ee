import Logging
import Platform

/// One entry's run as it goes: its clock, the steps so far (seconds each),
/// and where its console output begins, so its tail shows nothing of
/// earlier runs. Used by one task at a time.
final class EntryProgress {
    let entry: TestRunEntry
    let begin = ContinuousClock.now
    var steps: [(name: String, seconds: Double)] = []
    let console: GuestConsole
    let consoleLog: String?
    let logOffset: Int
    /// Where the run's part of the console and QEMU logs begins: it is copied next to the reports.
    let logStart: RunLogs.Start
    /// Wall clock at the start, for the report.
    let startedAt = wallClockSeconds()
    let test: LabTest
    /// 1, or the retry's number (`--retry-errors`): its screenshot and log copies are its own.
    let attempt: Int

    init(_ entry: TestRunEntry, test: LabTest, on booted: TestRunner.BootedGuest, attempt: Int = 1) {
        self.entry = entry
        self.test = test
        self.attempt = attempt
        console = booted.console
        consoleLog = booted.session.record.consoleLog
        logOffset = consoleLog.map(ConsoleLog.size) ?? 0
        let qemuLog = booted.session.runtime.qemuLogPath
        logStart = RunLogs.Start(consoleLog: consoleLog, consoleOffset: logOffset, qemuLog: qemuLog, qemuOffset: FileSystem.size(qemuLog) ?? 0)
    }

    /// Runs `body` as the step `name`, timed.
    func step<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
        let start = ContinuousClock.now
        defer {
            let seconds = (ContinuousClock.now - start).inSeconds
            steps.append((name, seconds))
            LabCoreLog.logger.debug("step \(name) of \(entry.guest)/\(entry.displayName): \(seconds) s")
        }
        return try await body()
    }

    /// The entry's result now: its duration so far and its steps.
    func result(_ outcome: TestOutcome, status: Int32? = nil, output: String = "", message: String = "",
                diagnoses: [Diagnosis] = [], tail: String = "") -> TestResult {
        var result = TestResult(entry: entry, outcome: outcome, duration: (ContinuousClock.now - begin).inSeconds, exitStatus: status, output: output,
                                message: message, diagnoses: diagnoses, consoleTail: tail, steps: steps)
        result.startedAt = startedAt
        result.command = test.run.isEmpty ? nil : test.run
        result.expectedStatus = test.status
        result.expect = test.expect
        result.screenExpect = test.screenExpect
        return result
    }

    /// The run cancelled, during the step it was in.
    func cancelled() -> TestResult {
        result(.cancelled, message: "cancelled" + (steps.last.map { " during \($0.name)" } ?? ""))
    }

    /// This run's console output, its last 2 KiB.
    func consoleTail() -> String {
        guard let consoleLog else { return console.tail() }
        return ConsoleLog.tail(consoleLog, bytes: 2048, since: logOffset)
    }
}

/// One entry on a booted guest: `before_each`, the clean state with the
/// devices attached (``prepare(_:_:)``), the test's command, the verdict,
/// `after_each`. A run that breaks the guest (QEMU gone, a console that did
/// not recover) says so, and the loop restarts the guest.
extension TestRunner {
    /// Runs one entry; `healthy` is false when the guest must be restarted.
    func runEntry(_ entry: TestRunEntry, on booted: BootedGuest, index: Int, total: Int, attempt: Int = 1) async -> (TestResult, healthy: Bool) {
        let progress = EntryProgress(entry, test: lab.test(named: entry.test)!, on: booted, attempt: attempt)
        let (run, healthy) = await runEntry(progress, on: booted, index: index, total: total)
        var result = run
        (result.consoleLog, result.qemuLog) = copyLogs(from: progress.logStart, entry: entry, attempt: attempt)
        return (result, healthy)
    }

    /// The logs of a run or boot from `start` on, copied beside the reports (``RunLogs``); nil without
    /// a report file or when cancelled (the run hurries to its end; nothing more is written).
    func copyLogs(from start: RunLogs.Start, entry: TestRunEntry, attempt: Int = 1) -> (console: String?, qemu: String?) {
        guard let directory = options.screenshotDirectory, !Task.isCancelled else { return (nil, nil) }
        let copied = RunLogs.copy(from: start, into: directory, name: artifactName(entry, attempt: attempt))
        for problem in copied.problems {
            observe(.note("no log copy of \(entry.guest) \(entry.isBoot ? "boot" : entry.displayName): \(problem)"))
        }
        return (copied.console, copied.qemu)
    }

    func runEntry(_ progress: EntryProgress, on booted: BootedGuest, index: Int, total: Int) async -> (TestResult, healthy: Bool) {
        let entry = progress.entry
        let test = progress.test
        let environment = hookEnvironment(entry, booted: booted, index: index, total: total, attempt: progress.attempt)
        do {
            for hook in eachHooks(for: entry, after: false) {
                let outcome = try await progress.step(hook.step) {
                    try await HostHook.run(hook.command, directory: lab.directory, environment: hook.environment(environment), timeout: hook.timeout)
                }
                if Task.isCancelled { return (progress.cancelled(), false) }
                if !outcome.succeeded {
                    return (progress.result(.error, output: outcome.output, message: hook.step + " hook " + Self.describe(outcome)), true)
                }
            }
            try await prepare(booted, progress)
            if Task.isCancelled { return (progress.cancelled(), false) }
            if test.reset {
                // The firmware's screens again, for keys: and screen_expect: (a test with reset: has no run:).
                try await progress.step("reset") {
                    _ = try await booted.session.reset()
                    booted.console.skipReceived()
                }
            }
            // A test may only read the screen and type (screen_expect:/keys: without run:).
            // A panic, reset or shutdown of the guest (QEMU's events) ends the command at once (``GuestUpset``).
            let command = test.run.isEmpty ? nil : try await progress.step("test") {
                try await GuestUpset.watching(booted.session.qmp) { try await booted.commands.run(test.run, timeout: test.timeout) }
            }
            if Task.isCancelled { return (progress.cancelled(), false) }
            var result = try await judge(command, of: test, on: booted, progress)
            for hook in eachHooks(for: entry, after: true) where result.outcome != .cancelled {
                try await runAfterEach(hook, after: &result, environment: environment, progress)
            }
            return (result, true)
        } catch where Task.isCancelled {
            return (progress.cancelled(), false)
        } catch {
            return await brokenRun(error, on: booted, progress)
        }
    }

    /// The verdict on the test's command (nil: a test without `run:`): its
    /// exit status, its `expect` texts, then its `keys:` typed and the
    /// screen's `screen_expect` texts, all awaited together within one
    /// `timeout`. A run that did not pass keeps its console tail (and what
    /// the screen showed) and a screenshot.
    func judge(_ command: GuestCommandResult?, of test: LabTest, on booted: BootedGuest, _ progress: EntryProgress) async throws -> TestResult {
        var problems: [String] = []
        if let command, command.exitStatus != test.status {
            problems.append("exit status \(command.exitStatus) (expected \(test.status))")
        }
        for text in test.expect where !(command?.output.contains(text) ?? false) {
            problems.append("output lacks \"\(text)\"")
        }
        var screenText = ""
        // One wait for the keys' screens and screen_expect together.
        let deadline = ContinuousClock.now + test.timeout
        do {
            if !test.keys.isEmpty {
                try await progress.step("keys") {
                    try await GuestKeyboard(session: booted.session).perform(test.keys, until: deadline, seconds: test.timeout.inSeconds)
                }
            }
            if !test.screenExpect.isEmpty {
                _ = try await progress.step("screen") {
                    try await GuestScreen(session: booted.session).waitForTexts(test.screenExpect, until: deadline, seconds: test.timeout.inSeconds)
                }
            }
        } catch let error as GuestScreen.ScreenError {
            guard case .textNotShown(_, _, let shown) = error else { throw error }
            problems.append(error.description)
            screenText = shown
        }
        guard !problems.isEmpty else {
            return progress.result(.passed, status: command?.exitStatus, output: command?.output ?? "")
        }
        var tail = progress.consoleTail()
        if !screenText.isEmpty { tail += (tail.isEmpty ? "" : "\n") + "--- screen ---\n" + screenText }
        var result = progress.result(.failed, status: command?.exitStatus, output: command?.output ?? "",
                                     message: problems.joined(separator: "; "), tail: tail)
        result.screenshot = await saveScreenshot(booted.session, guest: booted.guest, entry: progress.entry, attempt: progress.attempt)
        return result
    }

    /// `after_each` with the outcome in `QLAB_RESULT`: its failure makes the
    /// run an `error`, its cancellation a `cancelled`, the verdict kept in the message.
    func runAfterEach(_ hook: EachHook, after result: inout TestResult, environment: [String: String], _ progress: EntryProgress) async throws {
        var environment = hook.environment(environment)
        environment["QLAB_RESULT"] = result.outcome.rawValue
        let outcome = try await progress.step(hook.step) {
            try await HostHook.run(hook.command, directory: lab.directory, environment: environment, timeout: hook.timeout)
        }
        result.steps = progress.steps
        let verdict = result.message.isEmpty ? "" : result.message + "; "
        if outcome.cancelled {
            result.outcome = .cancelled
            result.message = verdict + "cancelled during \(hook.step)"
        } else if !outcome.succeeded {
            result.outcome = .error
            result.message = verdict + hook.step + " hook " + Self.describe(outcome)
        }
    }

    /// A before_each or after_each hook of an entry: the lab's, or a device's.
    struct EachHook {
        var command: String
        /// `before_each`, `after_each`; a device's: `before_each DEVICE`.
        var step: String
        var timeout: Duration
        /// The device whose hook it is (`QLAB_HOOK_DEVICE`); nil for the lab's.
        var device: String?
        var hook: String

        func environment(_ base: [String: String]) -> [String: String] {
            var environment = base
            environment["QLAB_HOOK"] = hook
            environment["QLAB_HOOK_DEVICE"] = device ?? ""
            return environment
        }
    }

    /// The entry's before_each hooks in the order they run: the lab's, then
    /// each device's the entry's guest has (file order); after: the reverse
    /// (devices' after_each, then the lab's). A device is in an entry's guest
    /// unless it is a device of the matrix other than the entry's.
    func eachHooks(for entry: TestRunEntry, after: Bool) -> [EachHook] {
        let name = after ? "after_each" : "before_each"
        var hooks: [EachHook] = []
        if let command = after ? lab.hooks.afterEach : lab.hooks.beforeEach {
            hooks.append(EachHook(command: command, step: name, timeout: lab.hooks.timeout, device: nil, hook: name))
        }
        for device in lab.devices where !lab.matrixDevices.contains(device.name) || device.name == entry.device {
            guard let deviceHooks = device.hooks, let command = after ? deviceHooks.afterEach : deviceHooks.beforeEach else { continue }
            hooks.append(EachHook(command: command, step: name + " " + device.name, timeout: deviceHooks.timeout ?? lab.hooks.timeout, device: device.name, hook: name))
        }
        return after ? hooks.reversed() : hooks
    }

    /// A run that ended in an error: a command that did not end in time is a
    /// `timeout` (healthy if the console recovered); a guest that panicked,
    /// reset or shut down meanwhile an `error` saying so, with the console's
    /// panic line and the tail from it; anything else an `error`
    /// with QEMU's exit, last output and diagnosis when QEMU is gone.
    func brokenRun(_ error: Error, on booted: BootedGuest, _ progress: EntryProgress) async -> (TestResult, healthy: Bool) {
        var result: TestResult
        var healthy = false
        if case GuestError.commandTimeout(_, let seconds, let recovered, _) = error {
            result = progress.result(.timeout, message: "the test did not end within \(Self.wholeSeconds(seconds)) s" + (recovered ? "" : "; the console did not recover"),
                                     tail: progress.consoleTail())
            healthy = recovered
        } else if let upset = error as? GuestUpset {
            // The console's panic line says why; the tail starts there (its backtrace follows it).
            let tail = progress.consoleLog.map { ConsoleLog.panicTail($0, since: progress.logOffset) } ?? progress.consoleTail()
            let panicLine = ConsoleLog.panicLine(in: tail)
            result = progress.result(.error, message: upset.description + (panicLine.map { ": " + $0 } ?? ""), tail: tail)
        } else if let plug = error as? DeviceError, plug.isPlugFailure, qemuRuns(booted) {
            // The card did not go back in after the revert (or reset): the test cannot
            // run, but QEMU and the guest are fine and the card is unplugged, as the
            // snapshot has it, so the next entry starts from a fresh revert, not a boot.
            result = progress.result(.error, message: "the card was not plugged back, so the test did not run (the next run reverts again): \(plug)",
                                     diagnoses: plug.diagnoses, tail: progress.consoleTail())
            healthy = true
        } else {
            let breakage = await explainBreakage(error, booted: booted)
            result = progress.result(.error, message: breakage.message, diagnoses: breakage.diagnoses, tail: progress.consoleTail())
            result.qemuOutput = breakage.qemuOutput
        }
        result.screenshot = await saveScreenshot(booted.session, guest: booted.guest, entry: progress.entry, attempt: progress.attempt)
        return (result, healthy)
    }

    /// The lab's QEMU is still running (the record read again: a fast revert replaces QEMU).
    func qemuRuns(_ booted: BootedGuest) -> Bool {
        let runtime = booted.session.runtime
        guard let record = (try? runtime.records.reload()) ?? nil else { return false }
        return runtime.liveQEMU(record) != nil
    }

    /// Why a run broke the guest.
    struct Breakage {
        var message: String
        var diagnoses: [Diagnosis]
        /// QEMU's last stderr lines when QEMU is gone.
        var qemuOutput = ""
    }

    /// Why the guest broke: QEMU's exit, its last output and their diagnosis when QEMU is gone.
    func explainBreakage(_ error: Error, booted: BootedGuest) async -> Breakage {
        var breakage = Breakage(message: "\(error)", diagnoses: (error as? SnapshotError)?.diagnoses ?? (error as? DeviceError)?.diagnoses ?? [])
        let runtime = booted.session.runtime
        // Reloaded: the supervisor rewrites the record when it restarts QEMU, and removes it once QEMU is gone.
        if let record = (try? runtime.records.reload()) ?? Optional(booted.session.record), runtime.liveQEMU(record) == nil {
            if let exit = await runtime.exitRecord(since: record.startedAt, waiting: .seconds(5)) {
                breakage.message = "QEMU \(exit.exitDescription) during the test (\(error))"
                breakage.diagnoses += exit.diagnoses
                breakage.qemuOutput = TestResult.lastLines(of: exit.qemuOutput)
            } else {
                breakage.message = "QEMU ended during the test (\(error))"
            }
        }
        return breakage
    }

    /// Saves the guest's screen as `LAB-GUEST-TEST-N.png` (`LAB-GUEST-DEVICE-TEST-N.png` in a lab with a device dimension) in the screenshot directory, for a
    /// run or boot that did not pass (a retry's `attempt` K > 1 adds `-attemptK`); nil when the guest has no display, there is no directory, or
    /// QEMU is gone (a note says why when QEMU answered but the picture could not be saved).
    func saveScreenshot(_ session: LabSession, guest: LabGuest, entry: TestRunEntry, attempt: Int = 1) async -> String? {
        guard let directory = options.screenshotDirectory, lab.display(for: guest) != .none, !Task.isCancelled else { return nil }
        // An unreadable record says nothing about QEMU: the screendump is tried (and says why it failed).
        if let record = (try? session.runtime.record) ?? nil, session.runtime.liveQEMU(record) == nil { return nil }
        let path = directory + "/" + artifactName(entry, attempt: attempt) + ".png"
        do {
            try await GuestScreen(session: session).saveScreenshot(to: path)
            observe(.note("screenshot of \(entry.guest) \(entry.isBoot ? "boot" : entry.displayName): \(path)"))
            return path
        } catch {
            observe(.note("no screenshot of \(entry.guest): \(error)"))
            return nil
        }
    }

    /// The name of a run's files next to the reports (screenshot, logs) without its extension:
    /// `LAB-GUEST-TEST-N`, with a device dimension `LAB-GUEST-DEVICE-TEST-N` (one file per cell).
    func artifactName(_ entry: TestRunEntry, attempt: Int = 1) -> String {
        ([lab.name, entry.guest] + (entry.device.map { [$0] } ?? []) + [entry.test, String(entry.isBoot ? entry.matrixIndex : entry.repeatIndex)])
            .map(Self.fileNamePart).joined(separator: "-") + (attempt > 1 ? "-attempt\(attempt)" : "")
    }

    /// Letters, digits, `.`, `_` and `-` of a name; anything else becomes `_`.
    static func fileNamePart(_ text: String) -> String {
        String(text.unicodeScalars.map { s -> Character in
            s.isASCII && (s.properties.isAlphabetic || ("0"..."9").contains(s) || s == "." || s == "_" || s == "-") ? Character(s) : "_"
        })
    }

    /// Brings the guest to a clean state with the devices attached and found:
    /// a revert to the ready snapshot (strategy snapshot) or a reset after the
    /// first run (strategy reset), then the lab's hotplug devices attached and
    /// the guest's rescan. What an entry attaches is decided here, in
    /// ``devicesToAttach(for:on:)``.
    func prepare(_ booted: BootedGuest, _ progress: EntryProgress) async throws {
        let hotplug = try devicesToAttach(for: progress.entry, on: booted)
        switch booted.strategy {
        case .snapshot:
            // The step says the method ("revert fast": a fresh QEMU; "revert loadvm": in place).
            let method: RevertMethod = booted.session.hasRAMImage(options.readyTag) ? .fast : .loadvm
            try await progress.step("revert \(method.rawValue)") {
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
                try await progress.step("reset") {
                    let offset = booted.session.record.consoleLog.flatMap(FileSystem.size) ?? 0
                    // Hotplugged cards go first, so the next run gets fresh ones (and fresh
                    // disk overlays); the reset that completes their unplug is the reboot.
                    let attached = try booted.session.hotplugDeviceNames().filter { booted.session.currentDeviceState($0) == .hotplug }
                    if attached.isEmpty {
                        _ = try await booted.session.reset()
                    } else {
                        _ = try await booted.session.detach(devices: attached, policy: .resetAtOnce)
                    }
                    try await booted.console.waitForReady(booted.guest, since: offset)
                }
            }
            if !hotplug.isEmpty {
                try await progress.step("attach") { _ = try await booted.session.attach(devices: hotplug) }
            }
        }
        booted.freshBoot = false
        if !hotplug.isEmpty, let rescan = booted.guest.effectiveRescan {
            try await progress.step("rescan") {
                let result = try await booted.commands.run(rescan, timeout: .seconds(120))
                if result.exitStatus != 0 {
                    throw TestRunError.rescanFailed(status: result.exitStatus, output: result.output)
                }
            }
        }
    }

    /// The hotplug devices `entry` runs with: every hotplug device of the
    /// lab, or in a lab with a device dimension only the entry's of the
    /// matrix's (``Lab/hotplugDevices(for:device:)``).
    func devicesToAttach(for entry: TestRunEntry, on booted: BootedGuest) throws -> [String] {
        let names = try booted.session.hotplugDeviceNames()
        let entryDevices = lab.hotplugDevices(for: booted.guest, device: entry.device)
        return names.filter(entryDevices.contains)
    }

    func hookEnvironment(_ entry: TestRunEntry, booted: BootedGuest, index: Int, total: Int, attempt: Int = 1) -> [String: String] {
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
        // 1, then 2, ... when `--retry-errors` runs the entry again.
        env["QLAB_ATTEMPT"] = String(attempt)
        env["QLAB_QMP_SOCKET"] = booted.session.runtime.qmpSocketPath
        env["QLAB_CONSOLE_LOG"] = booted.session.record.consoleLog ?? ""
        env["QLAB_DEVICES"] = lab.devices.map(\.name).joined(separator: " ")
        env["QLAB_PASSTHROUGH"] = booted.session.record.passthroughHosts.map(\.host).joined(separator: " ")
        env.merge(deviceEnvironment(entry, booted: booted)) { $1 }
        env.merge(RunLabel.environment(labels)) { $1 }
        return env
    }

    static func describe(_ outcome: CapturedRun) -> String {
        if outcome.timedOut { return "timed out" }
        return "failed (\(outcome.exit?.description ?? "unknown")): " + outcome.output.suffix(400)
    }
}
