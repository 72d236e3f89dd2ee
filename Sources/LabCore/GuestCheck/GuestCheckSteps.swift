import Platform
import QMP

/// The lab the check booted and what the steps learn on the way (the boot
/// budget, the readiness), shared by the step functions below.
final class BootedGuest: @unchecked Sendable {
    let up: LabController.UpResult
    let session: LabSession
    let console: GuestConsole
    let guest: LabGuest
    /// When QEMU answered: `boot_timeout` counts from here.
    let bootStart: ContinuousClock.Instant
    let bootDeadline: ContinuousClock.Instant
    /// "linux: ... (docs/guests.md)": where the OS's console setup is described.
    let recipe: String
    /// How long a command of the framing steps may take.
    let commandTimeout = Duration.seconds(60)
    /// Set by the ready step: how the guest was found ready, or the login that failed after its ready text.
    var readiness: GuestConsole.Readiness?
    var loginFailure: GuestError?
    /// The SCSI disks listed before any hotplug (the disks step counts the new ones).
    var disksBeforeHotplug: [String] = []

    init(check: GuestCheck, up: LabController.UpResult, session: LabSession, console: GuestConsole) {
        self.up = up
        self.session = session
        self.console = console
        self.guest = check.guest
        bootStart = ContinuousClock.now
        bootDeadline = bootStart + check.guest.bootTimeout
        recipe = "\(check.guest.os.rawValue): \(check.guest.profile.consoleRecipe) (docs/guests.md)"
    }

    /// What is left of `boot_timeout` (at least 1 ms).
    func bootTimeLeft() -> Duration { max(.milliseconds(1), ContinuousClock.now.duration(to: bootDeadline)) }

    /// QEMU's exit, when it ended during a step, as the step's failure (`error`: what the step saw).
    @Sendable func qemuEnded(_ error: Error?) async -> GuestCheck.StepFailure? {
        guard let exit = await TestRunner.exitOfThisBoot(up.runtime, startedAt: up.record.startedAt) else { return nil }
        return GuestCheck.StepFailure("QEMU \(exit.exitDescription)" + (error.map { " (\($0))".components(firstLine: true) } ?? ""),
                                      diagnoses: exit.diagnoses, tail: console.tail())
    }

    /// Runs `command` on the console; a status or output other than expected is the step's failure.
    @discardableResult
    func expect(_ command: String, output expected: String? = nil, status: Int32 = 0) async throws -> GuestCommandResult {
        let result = try await console.run(command, timeout: commandTimeout)
        if result.exitStatus != status || (expected.map { result.output != $0 } ?? false) {
            throw GuestCheck.StepFailure("`\(GuestError.excerpt(command))` gave status \(result.exitStatus) (expected \(status))"
                                        + (expected.map { ", output \(quoted(result.output)) (expected \(quoted($0)))" } ?? ""),
                                        tail: console.tail())
        }
        return result
    }
}

/// One function per step kind, in the order ``GuestCheck/plan`` lists them.
extension GuestCheck {
    /// QEMU starts and QMP and the serial console answer.
    func checkMachine(_ booted: BootedLab) async throws -> Outcome {
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
    }

    /// Anything at all on the serial console: else the OS's console is elsewhere.
    func checkConsole(_ boot: BootedGuest) async throws -> Outcome {
        let (up, console) = (boot.up, boot.console)
        let log = up.record.consoleLog
        while true {
            if let log, ConsoleLog.size(log) > up.record.consoleLogOffset {
                return Outcome("\(ConsoleLog.size(log) - up.record.consoleLogOffset) bytes after \(secondsSince(boot.bootStart))")
            }
            if console.received > 0 { return Outcome("output after \(secondsSince(boot.bootStart))") }
            if let failure = await boot.qemuEnded(nil) { throw failure }
            if ContinuousClock.now >= boot.bootDeadline {
                throw StepFailure(
                    "nothing on the serial console within \(LabDuration.format(guest.bootTimeout)) (boot_timeout): the OS's console is not on the first serial port",
                    hint: boot.recipe, timedOut: true)
            }
            try await Task.sleep(for: .milliseconds(250))
        }
    }

    /// The ready text (and the login, and a shell that answers), as a run waits for it,
    /// within what the console step left of `boot_timeout`.
    func checkReady(_ boot: BootedGuest) async throws -> Outcome {
        let spent = boot.bootStart.duration(to: .now)
        do {
            boot.readiness = try await boot.console.waitForReady(guest, timeout: boot.bootTimeLeft())
        } catch let error as GuestError {
            if case .loginFailed = error {
                boot.loginFailure = error
                return Outcome("\"\(guest.ready ?? "login prompt")\" seen; the login follows")
            }
            if Task.isCancelled { throw error }
            if let failure = await boot.qemuEnded(error) { throw failure }
            if case .timeout(let what, let seconds, let tail) = error {
                // The budget is the whole boot's: say what it was, what was left for this wait, and where the rest went.
                throw StepFailure("no \(what) within the \(formatGuestSeconds(guest.bootTimeout.inSeconds)) boot_timeout: "
                                  + "\(formatGuestSeconds(seconds)) were left for it after \(formatGuestSeconds(spent.inSeconds)) "
                                  + "from QEMU's start to the first console output",
                                  hint: "if the console shows only firmware output, the OS's console is not on the serial port: \(boot.recipe)",
                                  tail: tail, timedOut: true)
            }
            throw error
        }
        let how = boot.readiness!.evidence == .probe ? "the shell answered (no ready text set)" : "\"\(guest.ready ?? "")\" seen"
        return Outcome("\(how) after \(secondsSince(boot.bootStart))")
    }

    func checkLogin(_ boot: BootedGuest) throws -> Outcome {
        guard let login = guest.login else { return Outcome(skip: "the guest has no login: (a shell on the console)", required: false) }
        if let failure = boot.loginFailure { throw StepFailure(failure.description.components(firstLine: true), tail: failure.consoleTail) }
        return Outcome(boot.readiness?.loggedIn == true ? "logged in as \(login.user)" : "a shell already answered: nothing typed")
    }

    /// The prompt the lab names appears after Enter.
    func checkPrompt(_ boot: BootedGuest) async throws -> Outcome {
        let prompt = GuestConsole.trimmedPrompt(guest.effectivePrompt)
        guard !prompt.isEmpty else { return Outcome(skip: "no prompt set", required: false) }
        boot.console.skipReceived()
        try boot.console.sendLine("")
        do {
            try await boot.console.waitFor(prompt, timeout: .seconds(10))
        } catch GuestError.timeout(_, _, let tail) {
            throw StepFailure("Enter did not bring the prompt \"\(guest.effectivePrompt)\" within 10 s (prompt: in the lab, or the profile's)",
                              hint: "set the guest's prompt: to what its shell prints (the console's last lines show it)", tail: tail)
        }
        return Outcome("\"\(guest.effectivePrompt)\" after Enter")
    }

    // The command framing `exec` and the test runs use: exit status, output, long lines, quoting, Ctrl-C.

    // GRUB's shell (`os: grub`) has no `exit N`, no `printf`, no files for a chunked command and
    // no Ctrl-C for a running command: its steps use GRUB's own commands or say why they skip.

    func checkExitStatus(_ boot: BootedGuest) async throws -> Outcome {
        if guest.profile.shell == .grub {
            try await boot.expect("false", status: 1)
            try await boot.expect("true")
            return Outcome("`false` -> 1, `true` -> 0 (GRUB's $?)")
        }
        try await boot.expect("exit 7", status: 7)
        try await boot.expect("true")
        return Outcome("`exit 7` -> 7, `true` -> 0")
    }

    func checkOutput(_ boot: BootedGuest) async throws -> Outcome {
        let command = guest.profile.shell == .grub
            ? "echo qlab-check-output; echo -n 'no newline'" : "echo qlab-check-output; printf 'no newline'"
        try await boot.expect(command, output: "qlab-check-output\nno newline")
        return Outcome("two lines, the last without a newline, came back exact")
    }

    func checkLongLine(_ boot: BootedGuest) async throws -> Outcome {
        if guest.profile.shell == .grub {
            return Outcome(skip: "GRUB takes a command as one line and has no files to write a longer one to (qlab refuses commands over its line limit)", required: false)
        }
        let payload = (0..<300).map { "qlab\($0 % 10)-" }.joined()  // 2100 bytes: typed in chunks
        let command = "echo " + payload
        try await boot.expect(command, output: payload + "\n")
        return Outcome("a \(command.utf8.count)-byte command (over \(boot.console.options.maximumLineBytes) per line) came back intact")
    }

    func checkQuoting(_ boot: BootedGuest) async throws -> Outcome {
        if guest.profile.shell == .grub {
            let command = #"echo "a b" 'it'\''s' "\$x \"q\" \\ back""#
            try await boot.expect(command, output: #"a b it's $x "q" \ back"# + "\n")
            return Outcome("single, double and escaped quotes round-trip")
        }
        let command = #"printf '%s|%s|%s\n' "a b" 'it'\''s' "\$HOME \"q\" \\ back""#
        try await boot.expect(command, output: #"a b|it's|$HOME "q" \ back"# + "\n")
        return Outcome("single, double and escaped quotes round-trip")
    }

    func checkInterrupt(_ boot: BootedGuest) async throws -> Outcome {
        if guest.profile.shell == .grub {
            return Outcome(skip: "GRUB's commands do not stop at Ctrl-C: a command that outlasts its timeout keeps the console until it ends", required: false)
        }
        do {
            let result = try await boot.console.run("sleep 600", timeout: options.interruptAfter)
            throw StepFailure("`sleep 600` ended by itself with status \(result.exitStatus)", tail: boot.console.tail())
        } catch GuestError.commandTimeout(_, _, let recovered, let tail) {
            guard recovered else { throw StepFailure("Ctrl-C did not bring the shell back", tail: tail) }
        }
        try await boot.expect("echo qlab-after-interrupt", output: "qlab-after-interrupt\n")
        return Outcome("`sleep 600` interrupted after \(LabDuration.format(options.interruptAfter)); the shell answers again")
    }

    /// As a run picks its transport: the agent when it answers, else the console.
    func checkAgent(_ boot: BootedGuest, _ booted: BootedLab) async throws -> Outcome {
        guard FileSystem.entryExists(boot.up.runtime.agentSocketPath),
            let agent = try? await GuestConnection.open(runtime: boot.up.runtime, transport: .agent)
        else { return Outcome(skip: "the agent does not answer: runs use the console", required: false) }
        booted.agent = agent
        let result = try await agent.run("echo qlab-agent", timeout: boot.commandTimeout)
        guard result.exitStatus == 0, result.output == "qlab-agent\n" else {
            throw StepFailure("the agent ran `echo qlab-agent` with status \(result.exitStatus), output \(quoted(result.output))")
        }
        return Outcome("runs send their commands through the guest agent")
    }

    /// Strategy snapshot: save, write a marker, revert; the marker is gone.
    func checkSnapshot(_ boot: BootedGuest) async throws -> Outcome {
        let marker = "/tmp/qlab-check-marker"
        let save = try await boot.session.saveSnapshot(options.snapshotTag, options: SnapshotOptions(replace: true))
        try await boot.expect("echo qlab > \(marker) && test -e \(marker)")
        let revert = try await boot.session.revert(to: options.snapshotTag, attaching: [])
        boot.console.skipReceived()
        let after = try await boot.console.run("test -e \(marker)", timeout: boot.commandTimeout)
        guard after.exitStatus == 1 else {
            throw StepFailure("\(marker), written after the snapshot, is still there after the revert (test -e: \(after.exitStatus))", tail: boot.console.tail())
        }
        return Outcome("saved \(options.snapshotTag) (\(save.via)), wrote \(marker), reverted (\(revert.via)): the marker is gone")
    }

    /// Strategy reset: `system_reset`, and the guest is ready again.
    func checkReset(_ boot: BootedGuest) async throws -> Outcome {
        let offset = boot.up.record.consoleLog.map(ConsoleLog.size) ?? 0
        let start = ContinuousClock.now
        _ = try await boot.session.reset()
        try await boot.console.waitForReady(guest, since: offset)
        return Outcome("system_reset; the guest was ready again after \(secondsSince(start))")
    }

    /// A boot device is in the record as attached at boot; a hotplug one is attached now.
    func checkAttach(_ device: LabDevice, atBoot: Bool, _ boot: BootedGuest) async throws -> Outcome {
        if atBoot {
            guard boot.session.currentDeviceState(device.name) == .boot else {
                throw StepFailure("the lab record does not have \(device.name) attached at boot")
            }
            return Outcome("on QEMU's command line" + (device.attach == .hotplug ? " (\(guest.os.rawValue) takes no PCI hotplug)" : ""))
        }
        let attached = try await boot.session.attach(device.name)
        return Outcome("\(attached.driver) at \(attached.placement.bus) \(attached.placement.addr.map { $0.description } ?? "(QEMU's slot)")")
    }

    /// The profile's rescan after the hotplug, once.
    func checkRescan(_ boot: BootedGuest) async throws -> Outcome {
        guard let rescan = guest.effectiveRescan else {
            return Outcome(skip: "no rescan command (the \(guest.os.rawValue) profile needs none)", required: false)
        }
        let result = try await boot.console.run(rescan, timeout: .seconds(120))
        guard result.exitStatus == 0 else {
            throw StepFailure("`\(GuestError.excerpt(rescan))` failed with status \(result.exitStatus): \(result.output.suffix(300))", tail: boot.console.tail())
        }
        return Outcome("`\(GuestError.excerpt(rescan))` -> 0")
    }

    /// Disks a device brings: an emulated controller's hard disks (its CD-ROMs are not in the
    /// disk listings; a host SCSI device counts as one); a passed-through card's, or a
    /// controller's without disks, are not known: at least one.
    func expectedDisks(_ device: LabDevice) -> Int {
        guard let disks = device.emulated?.disks, !disks.isEmpty else { return 1 }
        return disks.filter { $0.type == .disk }.count
    }

    /// The devices' SCSI disks in the guest's listing (waiting up to `diskPatience` for them).
    func checkDisks(_ boot: BootedGuest) async throws -> Outcome {
        guard let listing = guest.profile.listSCSIDisksCommand else {
            return Outcome(skip: "the \(guest.os.rawValue) profile has no command that lists SCSI disks", required: false)
        }
        let hotplug = lab.hotplugDevices(for: guest)
        let before = boot.disksBeforeHotplug
        let atBoot = lab.devices.filter { lab.effectiveAttach(of: $0, for: guest) == .boot }
        // Boot devices' disks were there before the hotplug; the hotplugged ones' are new.
        let expected = atBoot.map(expectedDisks).reduce(0, +) + hotplug.map(expectedDisks).reduce(0, +)
        let baseline = hotplug.isEmpty ? 0 : before.count - atBoot.map(expectedDisks).reduce(0, +)
        let deadline = ContinuousClock.now + options.diskPatience
        var now = try await disks(listing, boot.console)
        while now.count - baseline < expected && ContinuousClock.now < deadline {
            try await Task.sleep(for: .seconds(1))
            now = try await disks(listing, boot.console)
        }
        let names = lab.devices.map(\.name).joined(separator: ", ")
        guard now.count - baseline >= expected else {
            throw StepFailure(
                "`\(GuestError.excerpt(listing))` lists \(now.count) SCSI disk(s)" + (hotplug.isEmpty ? "" : " (\(before.count) before the hotplug)")
                    + "; \(names) bring \(expected)" + (now.isEmpty ? "" : ": " + now.joined(separator: "; ")),
                hint: "is the driver for the card in the guest's kernel, and does the rescan find it? (docs/guests.md)", tail: boot.console.tail())
        }
        return Outcome("\(now.count) listed (\(expected) from \(names)): " + now.suffix(6).joined(separator: "; "))
    }

    /// A hotplugged device unplugged: the guest answers, and its disks left the listing.
    func checkUnplug(_ device: LabDevice, _ boot: BootedGuest) async throws -> Outcome {
        let listing = guest.profile.listSCSIDisksCommand
        let offset = boot.up.record.consoleLog.map(ConsoleLog.size) ?? 0
        var listed: [String]?
        if let listing { listed = try await disks(listing, boot.console) }
        let detached = try await boot.session.detach(device.name, policy: .standard)
        if detached.method.usedReset { try await boot.console.waitForReady(guest, since: offset) }
        try await boot.expect("echo qlab-check-alive", output: "qlab-check-alive\n")
        var gone = ""
        if let listing, let listed, !detached.method.usedReset {
            // Its disks go with it: proof that they were this device's.
            let deadline = ContinuousClock.now + options.diskPatience
            var now = try await disks(listing, boot.console)
            while listed.count - now.count < expectedDisks(device) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .seconds(1))
                now = try await disks(listing, boot.console)
            }
            guard listed.count - now.count >= expectedDisks(device) else {
                throw StepFailure("the guest still lists \(now.count) SCSI disk(s) after the unplug (\(listed.count) before); \(device.name) had \(expectedDisks(device))",
                                  tail: boot.console.tail())
            }
            gone = "; its \(listed.count - now.count) disk(s) left the listing"
        }
        return Outcome("\(detached.method.description); the guest answers" + gone)
    }
}
