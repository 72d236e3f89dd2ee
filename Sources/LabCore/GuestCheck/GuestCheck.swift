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
            throw LabError.alreadyRunning(lab: lab.name, pid: record.qemuPID, supervisorPID: runtime.liveSupervisor(record), since: record.startedAt)
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

    /// The steps in order, each its own function (``GuestCheck`` in
    /// GuestCheckSteps.swift); the first that fails ends the checking.
    func check(_ steps: StepLog, _ booted: BootedLab) async {
        // QEMU and the firmware start (QEMU's own words and qlab's diagnosis when not).
        guard await steps.run(.machine, { try await self.checkMachine(booted) }),
            let up = booted.up, let session = booted.session, let console = booted.console
        else { return }
        let boot = BootedGuest(check: self, up: up, session: session, console: console)
        // From here on a step that fails because QEMU ended says so, with QEMU's diagnosis.
        steps.explain = boot.qemuEnded

        guard await steps.run(.console, { try await self.checkConsole(boot) }),
            await steps.run(.ready, { try await self.checkReady(boot) }),
            await steps.run(.login, { try self.checkLogin(boot) }),
            await steps.run(.prompt, { try await self.checkPrompt(boot) }),
            await steps.run(.exitStatus, { try await self.checkExitStatus(boot) }),
            await steps.run(.output, { try await self.checkOutput(boot) }),
            await steps.run(.longLine, { try await self.checkLongLine(boot) }),
            await steps.run(.quoting, { try await self.checkQuoting(boot) }),
            await steps.run(.interrupt, { try await self.checkInterrupt(boot) })
        else { return }
        if guest.agent {
            guard await steps.run(.agent, { try await self.checkAgent(boot, booted) }) else { return }
        }
        // A clean state for every run: the snapshot, or a reset.
        if strategy == .snapshot {
            guard await steps.run(.snapshot, { try await self.checkSnapshot(boot) }) else { return }
        } else {
            guard await steps.run(.reset, { try await self.checkReset(boot) }) else { return }
        }

        // The devices, as a run has them: boot ones there, hotplug ones attached in lab
        // order and one rescan; then their disks in the guest's listing; then each
        // hotplugged one unplugged again, its disks going with it.
        let hotplug = lab.hotplugDevices(for: guest)
        if !hotplug.isEmpty, let listing = guest.profile.listSCSIDisksCommand {
            boot.disksBeforeHotplug = (try? await disks(listing, console)) ?? []
        }
        for device in lab.devices {
            let atBoot = lab.effectiveAttach(of: device, for: guest) == .boot
            guard await steps.run(.attach(device: device.name, atBoot: atBoot), { try await self.checkAttach(device, atBoot: atBoot, boot) }) else { return }
        }
        if !hotplug.isEmpty {
            guard await steps.run(.rescan, { try await self.checkRescan(boot) }) else { return }
        }
        if !lab.devices.isEmpty {
            guard await steps.run(.disks, { try await self.checkDisks(boot) }) else { return }
        }
        for device in hotplug {
            guard await steps.run(.unplug(device: device.name), { try await self.checkUnplug(device, boot) }) else { return }
        }
    }

    /// The guest's SCSI disks, one line each.
    func disks(_ listing: String, _ console: GuestConsole) async throws -> [String] {
        let result = try await console.run(listing, timeout: .seconds(60))
        if guest.profile.shell == .grub {
            // GRUB's `ls` lists its devices on one line: "(hd0) (hd1) ".
            return result.output.split(whereSeparator: \.isWhitespace).map { String($0) }.filter { $0.hasPrefix("(hd") }
        }
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
func secondsSince(_ start: ContinuousClock.Instant) -> String {
    formatGuestSeconds(start.duration(to: .now).inSeconds)
}

/// A short quoted excerpt of guest output for a message.
func quoted(_ text: String) -> String {
    let flat = text.replacingAll("\n", with: "\\n")
    return "\"" + (flat.count > 80 ? String(flat.prefix(77)) + "..." : flat) + "\""
}

extension String {
    /// The text before the first newline when `firstLine`, else all of it.
    func components(firstLine: Bool) -> String {
        guard firstLine, let newline = firstIndex(of: "\n") else { return self }
        return String(self[..<newline])
    }
}
