import Platform
import QMP

/// `qlab guest check LAB GUEST`: boots a lab's guest as `qlab run` does
/// (``TestRunner/upOptions(_:)``, the same ``LabSession`` and
/// ``GuestConsole`` code) and checks, step by step, everything a run relies
/// on: QEMU starts, the serial console talks, the ready text, login and
/// prompt, the command framing, snapshot and revert (or reset), and for each
/// lab device its attachment, the profile's rescan, its SCSI disks in the
/// guest and its unplug. The first failure ends the checking: the steps
/// after it are SKIP. The lab is taken down at the end, also when the check
/// is cancelled (``StopRequest/cancelling(_:)``), and nothing of it is left.
public final class GuestCheck: Sendable {
    public struct Options: Sendable {
        /// The snapshot the check saves and reverts to (strategy snapshot).
        public var snapshotTag = "qlab-check"
        /// How long the Ctrl-C step lets `sleep` run before interrupting it.
        public var interruptAfter: Duration = .seconds(3)
        /// How long a device's disks may take to show after the rescan.
        public var diskPatience: Duration = .seconds(30)
        /// What cancels the check, if any: its second request makes the teardown hurry (SIGKILL).
        public var stop: StopRequest?
        public init() {}
    }

    /// What the check reports while it goes: the plan, then each step as it ends.
    public enum Event: Sendable {
        case planned([GuestCheckStepKind])
        case step(GuestCheckStep)
    }

    public let controller: LabController
    public let lab: Lab
    public let guest: LabGuest
    public let options: Options
    let observe: @Sendable (Event) -> Void

    public init(controller: LabController, labFile: String, guest: String?, options: Options = Options(),
                observe: @escaping @Sendable (Event) -> Void = { _ in }) throws {
        self.controller = controller
        self.lab = try Lab.load(path: labFile)
        self.guest = try lab.selectGuest(guest)
        self.options = options
        self.observe = observe
    }

    /// The strategy `qlab run` uses for this guest.
    public var strategy: Strategy { lab.effectiveStrategy(for: guest) }

    /// Every step, in order; all of them appear in the report.
    public var plan: [GuestCheckStepKind] {
        var steps: [GuestCheckStepKind] = [.machine, .console, .ready, .login, .prompt, .exitStatus, .output, .longLine, .quoting, .interrupt]
        if guest.agent { steps.append(.agent) }
        steps.append(strategy == .snapshot ? .snapshot : .reset)
        let hotplug = lab.hotplugDevices(for: guest)
        for device in lab.devices {
            steps.append(.attach(device: device.name, atBoot: lab.effectiveAttach(of: device, for: guest) == .boot))
        }
        if !hotplug.isEmpty { steps.append(.rescan) }
        if !lab.devices.isEmpty { steps.append(.disks) }
        steps += hotplug.map { .unplug(device: $0.name) }
        return steps
    }

    /// Runs the check. Throws only when the lab cannot be started at all for
    /// a reason that is not the guest's (it runs already); everything else,
    /// cancellation too, is in the report.
    public func run() async throws -> GuestCheckReport {
        let runtime = controller.runtime(lab.name)
        if let record = try runtime.record, runtime.liveQEMU(record) != nil {
            throw LabError.alreadyRunning(lab: lab.name, pid: record.qemuPID, supervisorPID: runtime.liveSupervisor(record))
        }
        let started = wallClockSeconds()
        let clock = ContinuousClock.now
        let plan = plan
        observe(.planned(plan))
        let steps = StepLog(plan: plan, observe: observe)
        let booted = BootedLab()
        await check(steps, booted)
        if Task.isCancelled { steps.cancelRest() }
        // Down to the end even when cancelled (hurried by a second stop request).
        await takeDown(booted)
        steps.skipRest()
        return GuestCheckReport(
            lab: lab.name, labFile: lab.file, guest: guest.name, os: guest.os, strategy: strategy, startedAt: started,
            duration: (ContinuousClock.now - clock).inSeconds, steps: steps.results, bootTimedOut: steps.bootTimedOut,
            cancelled: steps.cancelled || Task.isCancelled)
    }

    // MARK: The steps

    /// What the check started, for the teardown.
    final class BootedLab: @unchecked Sendable {
        /// `up` was called: even when it failed or was cancelled, `down` cleans up after it.
        var started = false
        var up: LabController.UpResult?
        var session: LabSession?
        var console: GuestConsole?
        var agent: (any GuestSession)?
    }

    func check(_ steps: StepLog, _ booted: BootedLab) async {
        let profile = guest.profile
        let recipe = "\(guest.os.rawValue): \(profile.consoleRecipe) (docs/guests.md)"

        // QEMU and the firmware start (QEMU's own words and qlab's diagnosis when not).
        guard await steps.run(.machine, { () throws -> Outcome in
            booted.started = true
            do {
                booted.up = try await controller.up(lab: lab, options: TestRunner.upOptions(guest))
            } catch LabError.launchFailed(_, let exit, let qemuOutput, let diagnoses) {
                // QEMU's own words go in the detail: they are not the guest console's.
                let words = qemuOutput.split(separator: "\n").suffix(4).joined(separator: "; ")
                throw StepFailure("QEMU did not start: it \(exit)" + (words.isEmpty ? "" : ": " + words), diagnoses: diagnoses)
            }
            let up = booted.up!
            booted.session = try await LabSession.open(runtime: up.runtime)
            booted.console = try GuestConsole.connect(runtime: up.runtime)
            return Outcome("QEMU \(up.record.qemuPID) runs (\(up.record.accel.accelerator.rawValue): \(up.record.accel.reason)), \(guest.effectiveFirmware == .uefi ? "OVMF" : "SeaBIOS")")
        }), let up = booted.up, let session = booted.session, let console = booted.console else { return }

        let bootStart = ContinuousClock.now
        let bootDeadline = bootStart + guest.bootTimeout
        func bootTimeLeft() -> Duration { max(.milliseconds(1), ContinuousClock.now.duration(to: bootDeadline)) }
        /// QEMU's exit, when it ended during a step, as the step's failure (`error`: what the step saw).
        @Sendable func qemuEnded(_ error: Error?) async -> StepFailure? {
            guard let exit = await TestRunner.exitOfThisBoot(up.runtime, startedAt: up.record.startedAt) else { return nil }
            return StepFailure("QEMU \(exit.exitDescription)" + (error.map { " (\($0))".components(firstLine: true) } ?? ""),
                               diagnoses: exit.diagnoses, tail: console.tail())
        }
        // From here on a step that fails because QEMU ended says so, with QEMU's diagnosis.
        steps.explain = qemuEnded

        // Anything at all on the serial console: else the OS's console is elsewhere.
        guard await steps.run(.console, { () throws -> Outcome in
            let log = up.record.consoleLog
            while true {
                if let log, ConsoleLog.size(log) > up.record.consoleLogOffset {
                    return Outcome("\(ConsoleLog.size(log) - up.record.consoleLogOffset) bytes after \(secondsSince(bootStart))")
                }
                if console.received > 0 { return Outcome("output after \(secondsSince(bootStart))") }
                if let failure = await qemuEnded(nil) { throw failure }
                if ContinuousClock.now >= bootDeadline {
                    throw StepFailure(
                        "nothing on the serial console within \(LabDuration.format(guest.bootTimeout)) (boot_timeout): the OS's console is not on the first serial port",
                        hint: recipe, timedOut: true)
                }
                try await Task.sleep(for: .milliseconds(250))
            }
        }) else { return }

        // The ready text (and the login, and a shell that answers), as a run waits for it.
        var readiness: GuestConsole.Readiness?
        var loginFailure: GuestError?
        guard await steps.run(.ready, { () throws -> Outcome in
            do {
                readiness = try await console.waitForReady(guest, timeout: bootTimeLeft())
            } catch let error as GuestError {
                if case .loginFailed = error {
                    loginFailure = error
                    return Outcome("\"\(guest.ready ?? "login prompt")\" seen; the login follows")
                }
                if Task.isCancelled { throw error }
                if let failure = await qemuEnded(error) { throw failure }
                if case .timeout(let what, let seconds, let tail) = error {
                    throw StepFailure("no \(what) within \(formatGuestSeconds(seconds)) (boot_timeout)",
                                      hint: "if the console shows only firmware output, the OS's console is not on the serial port: \(recipe)",
                                      tail: tail, timedOut: true)
                }
                throw error
            }
            let how = readiness!.evidence == .probe ? "the shell answered (no ready text set)" : "\"\(guest.ready ?? "")\" seen"
            return Outcome("\(how) after \(secondsSince(bootStart))")
        }) else { return }

        guard await steps.run(.login, { () throws -> Outcome in
            guard let login = guest.login else { return Outcome(skip: "the guest has no login: (a shell on the console)", required: false) }
            if let loginFailure { throw StepFailure(loginFailure.description.components(firstLine: true), tail: loginFailure.consoleTail) }
            return Outcome(readiness?.loggedIn == true ? "logged in as \(login.user)" : "a shell already answered: nothing typed")
        }) else { return }

        // The prompt the lab names appears after Enter.
        guard await steps.run(.prompt, { () throws -> Outcome in
            let prompt = GuestConsole.trimmedPrompt(guest.effectivePrompt)
            guard !prompt.isEmpty else { return Outcome(skip: "no prompt set", required: false) }
            console.skipReceived()
            try console.sendLine("")
            do {
                try await console.waitFor(prompt, timeout: .seconds(10))
            } catch GuestError.timeout(_, _, let tail) {
                throw StepFailure("Enter did not bring the prompt \"\(guest.effectivePrompt)\" within 10 s (prompt: in the lab, or the profile's)",
                                  hint: "set the guest's prompt: to what its shell prints (the console's last lines show it)", tail: tail)
            }
            return Outcome("\"\(guest.effectivePrompt)\" after Enter")
        }) else { return }

        // The command framing `exec` and the test runs use.
        let commandTimeout = Duration.seconds(60)
        func expect(_ command: String, output expected: String? = nil, status: Int32 = 0) async throws -> GuestCommandResult {
            let result = try await console.run(command, timeout: commandTimeout)
            if result.exitStatus != status || (expected.map { result.output != $0 } ?? false) {
                throw StepFailure("`\(GuestError.excerpt(command))` gave status \(result.exitStatus) (expected \(status))"
                                  + (expected.map { ", output \(quoted(result.output)) (expected \(quoted($0)))" } ?? ""),
                                  tail: console.tail())
            }
            return result
        }
        guard await steps.run(.exitStatus, { () throws -> Outcome in
            _ = try await expect("exit 7", status: 7)
            _ = try await expect("true")
            return Outcome("`exit 7` -> 7, `true` -> 0")
        }) else { return }
        guard await steps.run(.output, { () throws -> Outcome in
            _ = try await expect("echo qlab-check-output; printf 'no newline'", output: "qlab-check-output\nno newline")
            return Outcome("two lines, the last without a newline, came back exact")
        }) else { return }
        guard await steps.run(.longLine, { () throws -> Outcome in
            let payload = (0..<300).map { "qlab\($0 % 10)-" }.joined()  // 2100 bytes: typed in chunks
            let command = "echo " + payload
            _ = try await expect(command, output: payload + "\n")
            return Outcome("a \(command.utf8.count)-byte command (over \(console.options.maximumLineBytes) per line) came back intact")
        }) else { return }
        guard await steps.run(.quoting, { () throws -> Outcome in
            let command = #"printf '%s|%s|%s\n' "a b" 'it'\''s' "\$HOME \"q\" \\ back""#
            _ = try await expect(command, output: #"a b|it's|$HOME "q" \ back"# + "\n")
            return Outcome("single, double and escaped quotes round-trip")
        }) else { return }
        guard await steps.run(.interrupt, { () throws -> Outcome in
            do {
                let result = try await console.run("sleep 600", timeout: options.interruptAfter)
                throw StepFailure("`sleep 600` ended by itself with status \(result.exitStatus)", tail: console.tail())
            } catch GuestError.commandTimeout(_, _, let recovered, let tail) {
                guard recovered else { throw StepFailure("Ctrl-C did not bring the shell back", tail: tail) }
            }
            _ = try await expect("echo qlab-after-interrupt", output: "qlab-after-interrupt\n")
            return Outcome("`sleep 600` interrupted after \(LabDuration.format(options.interruptAfter)); the shell answers again")
        }) else { return }

        if guest.agent {
            guard await steps.run(.agent, { () throws -> Outcome in
                // As a run picks its transport: the agent when it answers, else the console.
                guard FileSystem.entryExists(up.runtime.agentSocketPath),
                    let agent = try? await GuestConnection.open(runtime: up.runtime, transport: .agent)
                else { return Outcome(skip: "the agent does not answer: runs use the console", required: false) }
                booted.agent = agent
                let result = try await agent.run("echo qlab-agent", timeout: commandTimeout)
                guard result.exitStatus == 0, result.output == "qlab-agent\n" else {
                    throw StepFailure("the agent ran `echo qlab-agent` with status \(result.exitStatus), output \(quoted(result.output))")
                }
                return Outcome("runs send their commands through the guest agent")
            }) else { return }
        }

        // A clean state for every run: the snapshot, or a reset.
        if strategy == .snapshot {
            guard await steps.run(.snapshot, { () throws -> Outcome in
                let marker = "/tmp/qlab-check-marker"
                let save = try await session.saveSnapshot(options.snapshotTag, options: SnapshotOptions(replace: true))
                _ = try await expect("echo qlab > \(marker) && test -e \(marker)")
                let revert = try await session.revert(to: options.snapshotTag, attaching: [])
                console.skipReceived()
                let after = try await console.run("test -e \(marker)", timeout: commandTimeout)
                guard after.exitStatus == 1 else {
                    throw StepFailure("\(marker), written after the snapshot, is still there after the revert (test -e: \(after.exitStatus))", tail: console.tail())
                }
                return Outcome("saved \(options.snapshotTag) (\(save.via)), wrote \(marker), reverted (\(revert.via)): the marker is gone")
            }) else { return }
        } else {
            guard await steps.run(.reset, { () throws -> Outcome in
                let offset = up.record.consoleLog.map(ConsoleLog.size) ?? 0
                let start = ContinuousClock.now
                _ = try await session.reset()
                try await console.waitForReady(guest, since: offset)
                return Outcome("system_reset; the guest was ready again after \(secondsSince(start))")
            }) else { return }
        }

        // The devices, as a run has them: boot ones there, hotplug ones attached in lab
        // order and one rescan; then their disks in the guest's listing; then each
        // hotplugged one unplugged again, its disks going with it.
        let hotplug = lab.hotplugDevices(for: guest)
        let listing = profile.listSCSIDisksCommand
        /// Disks a device brings: an emulated controller's; a passed-through card's are not known, at least one.
        func expectedDisks(_ device: LabDevice) -> Int { max(1, device.emulated?.disks.count ?? 1) }
        var before: [String] = []
        if !hotplug.isEmpty, let listing {
            do { before = try await disks(listing, console) } catch { before = [] }
        }
        for device in lab.devices {
            let atBoot = lab.effectiveAttach(of: device, for: guest) == .boot
            guard await steps.run(.attach(device: device.name, atBoot: atBoot), { () throws -> Outcome in
                if atBoot {
                    guard session.currentDeviceState(device.name) == .boot else {
                        throw StepFailure("the lab record does not have \(device.name) attached at boot")
                    }
                    return Outcome("on QEMU's command line" + (device.attach == .hotplug ? " (\(guest.os.rawValue) takes no PCI hotplug)" : ""))
                }
                let attached = try await session.attach(device.name)
                return Outcome("\(attached.driver) at \(attached.placement.bus) \(attached.placement.addr.map { $0.description } ?? "(QEMU's slot)")")
            }) else { return }
        }
        if !hotplug.isEmpty {
            guard await steps.run(.rescan, { () throws -> Outcome in
                guard let rescan = guest.effectiveRescan else {
                    return Outcome(skip: "no rescan command (the \(guest.os.rawValue) profile needs none)", required: false)
                }
                let result = try await console.run(rescan, timeout: .seconds(120))
                guard result.exitStatus == 0 else {
                    throw StepFailure("`\(GuestError.excerpt(rescan))` failed with status \(result.exitStatus): \(result.output.suffix(300))", tail: console.tail())
                }
                return Outcome("`\(GuestError.excerpt(rescan))` -> 0")
            }) else { return }
        }
        if !lab.devices.isEmpty {
            guard await steps.run(.disks, { () throws -> Outcome in
                guard let listing else {
                    return Outcome(skip: "the \(guest.os.rawValue) profile has no command that lists SCSI disks", required: false)
                }
                let atBoot = lab.devices.filter { lab.effectiveAttach(of: $0, for: guest) == .boot }
                // Boot devices' disks were there before the hotplug; the hotplugged ones' are new.
                let expected = atBoot.map(expectedDisks).reduce(0, +) + hotplug.map(expectedDisks).reduce(0, +)
                let baseline = hotplug.isEmpty ? 0 : before.count - atBoot.map(expectedDisks).reduce(0, +)
                let deadline = ContinuousClock.now + options.diskPatience
                var now = try await disks(listing, console)
                while now.count - baseline < expected && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .seconds(1))
                    now = try await disks(listing, console)
                }
                let names = lab.devices.map(\.name).joined(separator: ", ")
                guard now.count - baseline >= expected else {
                    throw StepFailure(
                        "`\(GuestError.excerpt(listing))` lists \(now.count) SCSI disk(s)" + (hotplug.isEmpty ? "" : " (\(before.count) before the hotplug)")
                            + "; \(names) bring \(expected)" + (now.isEmpty ? "" : ": " + now.joined(separator: "; ")),
                        hint: "is the driver for the card in the guest's kernel, and does the rescan find it? (docs/guests.md)", tail: console.tail())
                }
                return Outcome("\(now.count) listed (\(expected) from \(names)): " + now.suffix(6).joined(separator: "; "))
            }) else { return }
        }
        for device in hotplug {
            guard await steps.run(.unplug(device: device.name), { () throws -> Outcome in
                let offset = up.record.consoleLog.map(ConsoleLog.size) ?? 0
                var listed: [String]?
                if let listing { listed = try await disks(listing, console) }
                let detached = try await session.detach(device.name, policy: .standard)
                if detached.method.usedReset { try await console.waitForReady(guest, since: offset) }
                _ = try await expect("echo qlab-check-alive", output: "qlab-check-alive\n")
                var gone = ""
                if let listing, let listed, !detached.method.usedReset {
                    // Its disks go with it: proof that they were this device's.
                    let deadline = ContinuousClock.now + options.diskPatience
                    var now = try await disks(listing, console)
                    while listed.count - now.count < expectedDisks(device) && ContinuousClock.now < deadline {
                        try await Task.sleep(for: .seconds(1))
                        now = try await disks(listing, console)
                    }
                    guard listed.count - now.count >= expectedDisks(device) else {
                        throw StepFailure("the guest still lists \(now.count) SCSI disk(s) after the unplug (\(listed.count) before); \(device.name) had \(expectedDisks(device))",
                                          tail: console.tail())
                    }
                    gone = "; its \(listed.count - now.count) disk(s) left the listing"
                }
                return Outcome("\(detached.method.description); the guest answers" + gone)
            }) else { return }
        }
    }

    /// The guest's SCSI disks, one line each.
    func disks(_ listing: String, _ console: GuestConsole) async throws -> [String] {
        let result = try await console.run(listing, timeout: .seconds(60))
        return result.output.split(separator: "\n").map { String($0) }.filter { !$0.allSatisfy(\.isWhitespace) }
    }

    func takeDown(_ booted: BootedLab) async {
        booted.agent?.close()
        booted.console?.close()
        booted.session?.close()
        guard booted.started else { return }
        let (controller, name, stop) = (controller, lab.name, options.stop)
        _ = await shielded { try? await controller.down(name, stop: stop) }
        booted.up?.ownership?.release()
    }

    // MARK: Step bookkeeping

    /// What a step's body returns when it did not fail.
    struct Outcome {
        var status: GuestCheckStatus
        var required: Bool
        var detail: String
        init(_ detail: String) {
            self.status = .pass
            self.required = true
            self.detail = detail
        }
        init(skip reason: String, required: Bool) {
            self.status = .skip
            self.required = required
            self.detail = reason
        }
    }

    /// A step's failure, with what to do and what the console showed.
    struct StepFailure: Error {
        var detail: String
        var hint: String?
        var diagnoses: [Diagnosis]
        var tail: String?
        var timedOut: Bool
        init(_ detail: String, hint: String? = nil, diagnoses: [Diagnosis] = [], tail: String? = nil, timedOut: Bool = false) {
            self.detail = detail
            self.hint = hint
            self.diagnoses = diagnoses
            self.tail = tail
            self.timedOut = timedOut
        }
    }

    /// The results so far; the steps not reached are SKIP with the reason.
    final class StepLog: @unchecked Sendable {
        let plan: [GuestCheckStepKind]
        let observe: @Sendable (Event) -> Void
        var results: [GuestCheckStep] = []
        var bootTimedOut = false
        var cancelled = false
        /// Why the steps not reached are skipped.
        var stopReason: String?
        /// Turns a step's error into QEMU's exit and diagnosis when QEMU has ended.
        var explain: (@Sendable (Error) async -> StepFailure?)?

        init(plan: [GuestCheckStepKind], observe: @escaping @Sendable (Event) -> Void) {
            self.plan = plan
            self.observe = observe
        }

        func record(_ step: GuestCheckStep) {
            results.append(step)
            observe(.step(step))
        }

        /// Runs the step `kind` (skipping planned steps before it that were not
        /// reached); false when it failed or the check was cancelled.
        func run(_ kind: GuestCheckStepKind, _ body: () async throws -> Outcome) async -> Bool {
            guard !Task.isCancelled else { return false }
            let start = ContinuousClock.now
            do {
                let outcome = try await body()
                if Task.isCancelled { return false }
                record(GuestCheckStep(kind: kind, status: outcome.status, required: outcome.required, detail: outcome.detail,
                                      seconds: start.duration(to: .now).inSeconds))
                return true
            } catch {
                if Task.isCancelled { return false }
                let seconds = start.duration(to: .now).inSeconds
                var failure = error as? StepFailure
                if failure == nil, let explain { failure = await explain(error) }
                if let failure {
                    bootTimedOut = bootTimedOut || failure.timedOut
                    record(GuestCheckStep(kind: kind, status: .fail, detail: failure.detail, hint: failure.hint,
                                          diagnoses: failure.diagnoses, consoleTail: failure.tail.map(Self.lastLines), seconds: seconds))
                } else {
                    let guestError = error as? GuestError
                    let diagnoses = (error as? SnapshotError)?.diagnoses ?? (error as? DeviceError)?.diagnoses ?? []
                    // The error's own text without the console tail it carries (that goes in console_tail).
                    let text = "\(error)".components(firstLine: guestError?.consoleTail != nil)
                    record(GuestCheckStep(kind: kind, status: .fail, detail: text, diagnoses: diagnoses,
                                          consoleTail: guestError?.consoleTail.map(Self.lastLines), seconds: seconds))
                }
                stopReason = "not checked: \(kind.title) failed"
                return false
            }
        }

        /// The planned steps not run yet become SKIP (required: they were not checked).
        func skipRest() {
            for kind in plan.dropFirst(results.count) {
                record(GuestCheckStep(kind: kind, status: .skip, detail: stopReason ?? "not checked"))
            }
        }

        func cancelRest() {
            cancelled = true
            stopReason = "not checked: the check was cancelled"
        }

        /// The last 12 lines of a console tail.
        static func lastLines(_ tail: String) -> String {
            tail.split(separator: "\n", omittingEmptySubsequences: false).suffix(12).joined(separator: "\n")
        }
    }
}

/// "2.5 s" since `start`.
private func secondsSince(_ start: ContinuousClock.Instant) -> String {
    formatGuestSeconds(start.duration(to: .now).inSeconds)
}

/// A short quoted excerpt of guest output for a message.
private func quoted(_ text: String) -> String {
    let flat = text.replacingAll("\n", with: "\\n")
    return "\"" + (flat.count > 80 ? String(flat.prefix(77)) + "..." : flat) + "\""
}

extension String {
    /// The text before the first newline when `firstLine`, else all of it.
    fileprivate func components(firstLine: Bool) -> String {
        guard firstLine, let newline = firstIndex(of: "\n") else { return self }
        return String(self[..<newline])
    }
}
