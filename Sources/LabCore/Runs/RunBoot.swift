import Platform

/// A run's boots: the lab up with a fresh run overlay, the guest to its
/// ready text, the ready snapshot saved; a boot that fails is one
/// ``TestRunner/BootFailure`` (the lab down again, QEMU's words and that
/// boot's console tail and screen kept) whichever worker booted.
extension TestRunner {
    /// Why a guest did not boot, with that boot's console tail; the lab is down again.
    struct BootFailure: Error {
        var message: String
        var diagnoses: [Diagnosis] = []
        var consoleTail = ""
        /// QEMU's last stderr lines when QEMU ended (or did not start).
        var qemuOutput = ""
        var seconds: Double
        /// The guest's screen when it did not boot (a guest with a display).
        var screenshot: String?
        /// The boot's console and QEMU logs copied beside the reports (``RunLogs``), and when it began.
        var consoleLog: String?
        var qemuLog: String?
        var startedAt: Double?

        /// The boot's entry in the report: an error before `entry`, the run that needed the boot.
        func result(guest: String, before entry: TestRunEntry) -> TestResult {
            var result = TestResult(
                entry: TestRunEntry.boot(of: guest, before: entry), outcome: .error, duration: seconds,
                message: message, diagnoses: diagnoses, consoleTail: consoleTail, steps: [("boot", seconds)])
            result.qemuOutput = qemuOutput
            result.screenshot = screenshot
            result.consoleLog = consoleLog
            result.qemuLog = qemuLog
            result.startedAt = startedAt
            return result
        }
    }

    /// Boots `guest` to its ready state for `entry` (the run that needs the
    /// boot: a failed boot's screenshot is named after it and its `attempt`); throws
    /// ``BootFailure`` (or `CancellationError` when the run is cancelled meanwhile).
    /// `leftOut`: lab devices this boot leaves off QEMU's command line (a device dimension's others).
    func boot(_ guest: LabGuest, before entry: TestRunEntry, attempt: Int = 1, leavingOut leftOut: [String] = []) async throws -> BootedGuest {
        observe(.guestBooting(guest: guest.name))
        let begin = ContinuousClock.now
        let up: LabController.UpResult
        do {
            var upOptions = Self.upOptions(guest)
            upOptions.leftOutDevices = leftOut
            upOptions.reservation = cardReservation.withLock { $0 }
            up = try await controller.up(lab: lab, options: upOptions)
        } catch {
            await shutDown(nil)
            if Task.isCancelled { throw CancellationError() }
            // Said as every failed boot is (docs/reports.md, "Boots").
            var failed = BootFailure(message: "guest \(guest.name) did not boot: QEMU did not start: \(error)", seconds: (ContinuousClock.now - begin).inSeconds)
            if case .launchFailed(_, let exit, let qemuOutput, let diagnoses) = error as? LabError {
                failed.message = "guest \(guest.name) did not boot: QEMU did not start: it \(exit)"
                failed.diagnoses = diagnoses
                // QEMU's words (there was no console yet).
                failed.qemuOutput = TestResult.lastLines(of: qemuOutput)
            }
            throw failed
        }
        var session: LabSession?
        do {
            session = try await LabSession.open(runtime: up.runtime)
            return try await waitUntilReady(guest, session: session!, up: up, since: begin)
        } catch {
            let cancelled = Task.isCancelled
            var failed = await bootFailure(error, guest: guest, up: up, since: begin, cancelled: cancelled)
            let bootEntry = TestRunEntry.boot(of: guest.name, before: entry)
            if !cancelled, let session {
                failed.screenshot = await saveScreenshot(session, guest: guest, entry: bootEntry, attempt: attempt)
            }
            failed.startedAt = up.record.startedAt
            if !cancelled {
                (failed.consoleLog, failed.qemuLog) = copyLogs(from: RunLogs.Start(
                    consoleLog: up.record.consoleLog, consoleOffset: up.record.consoleLogOffset,
                    qemuLog: up.runtime.qemuLogPath, qemuOffset: up.record.qemuLogOffset), entry: bootEntry, attempt: attempt)
            }
            session?.close()
            await takeDown(ownership: up.ownership)
            if cancelled || Task.isCancelled { throw CancellationError() }
            failed.seconds = (ContinuousClock.now - begin).inSeconds
            throw failed
        }
    }

    /// The started lab's guest to its ready text (after the firmware's screen
    /// text, if the guest names one), its command channel, the ready snapshot.
    func waitUntilReady(_ guest: LabGuest, session: LabSession, up: LabController.UpResult, since begin: ContinuousClock.Instant) async throws -> BootedGuest {
        let console = try GuestConsole.connect(runtime: up.runtime)
        do {
            // Boot keys and the firmware's screen text first (the serial console is logged meanwhile).
            _ = try await GuestBootWait.untilReady(guest, session: session, console: console, since: begin)
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
            _ = try await session.saveSnapshot(options.readyTag, options: SnapshotOptions(replace: true))
        }
        observe(.guestReady(guest: guest.name, seconds: (ContinuousClock.now - begin).inSeconds))
        return BootedGuest(guest: guest, session: session, console: console, commands: commands, strategy: strategy, ownership: up.ownership)
    }

    /// What a boot that started (QEMU ran) and then failed says: the wait
    /// that ran out, or QEMU's exit with its diagnosis and last output, and
    /// that boot's console tail (its `seconds` are the caller's to set).
    func bootFailure(_ error: Error, guest: LabGuest, up: LabController.UpResult, since begin: ContinuousClock.Instant, cancelled: Bool) async -> BootFailure {
        var message = "\(error)"
        var failed = BootFailure(message: "", seconds: 0)
        if case GuestError.timeout(let what, _, _) = error {
            // The whole boot_timeout: the wait for `ready` gets what the firmware text left of it.
            message = "no \(what) within \(Self.wholeSeconds(guest.bootTimeout.inSeconds)) s (boot_timeout)"
        }
        if case GuestScreen.ScreenError.textNotShown(let texts, let seconds, _) = error {
            message = "no firmware text \(GuestScreen.ScreenError.quotedList(texts)) on the screen within \(Self.wholeSeconds(seconds)) s (boot_timeout)"
        }
        if !cancelled, let exit = await Self.exitOfThisBoot(up.runtime, startedAt: up.record.startedAt) {
            message = "QEMU \(exit.exitDescription) while the guest booted" + (message.isEmpty ? "" : " (\(message))")
            failed.diagnoses = exit.diagnoses
            failed.qemuOutput = TestResult.lastLines(of: exit.qemuOutput)
        }
        // This boot's console output only: the log holds earlier boots too.
        if let path = up.record.consoleLog {
            failed.consoleTail = ConsoleLog.tail(path, bytes: 2048, since: up.record.consoleLogOffset)
        }
        failed.message = "guest \(guest.name) did not boot: " + message
        return failed
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
}
