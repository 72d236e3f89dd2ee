/// A booting guest to its ready text, the way every command that waits for a
/// boot waits (`qlab run`, `qlab up --wait-ready`): the guest's `boot_keys`
/// pressed while its firmware runs, then its `firmware_ready` text on the
/// screen, then `ready` on the console, all within one `boot_timeout`.
public enum GuestBootWait {
    /// Whether `guest`'s boot is watched on the screen (`boot_keys`,
    /// `firmware_ready`), so the wait needs a QMP session.
    public static func usesScreen(_ guest: LabGuest) -> Bool {
        guest.firmwareReady != nil || !guest.bootKeys.isEmpty
    }

    /// Waits for `guest` booting (started at `begin`) until its console says
    /// it is ready. `session`: the lab's QMP session, needed only when the
    /// boot is watched on the screen (``usesScreen(_:)``): QEMU serves one
    /// QMP client at a time, so a caller that waits long holds none otherwise. A screen text that does not show throws
    /// ``GuestScreen/ScreenError/textNotShown(texts:seconds:screen:)``; the
    /// ready text that does not come throws as ``GuestConsole/waitForReady(_:since:timeout:)``.
    public static func untilReady(
        _ guest: LabGuest, session: LabSession?, console: GuestConsole, since begin: ContinuousClock.Instant
    ) async throws -> GuestConsole.Readiness {
        let deadline = begin + guest.bootTimeout
        let screenSteps = usesScreen(guest)
        if screenSteps, session == nil { throw LabError.system("guest \(guest.name)'s boot is watched on the screen (boot_keys, firmware_ready): it needs the lab's QMP session") }
        // Keys first: a firmware prompt (Press ESC, Ctrl-A) shows only while the firmware runs.
        if let session, !guest.bootKeys.isEmpty {
            try await GuestKeyboard(session: session).perform(guest.bootKeys, until: deadline, seconds: guest.bootTimeout.inSeconds)
        }
        if let session, let text = guest.firmwareReady {
            _ = try await GuestScreen(session: session).waitForTexts([text], until: deadline, seconds: guest.bootTimeout.inSeconds)
        }
        // What is left of boot_timeout after the screen (all of it when the guest has no screen steps).
        return try await console.waitForReady(guest, timeout: screenSteps ? max(.milliseconds(1), deadline - ContinuousClock.now) : nil)
    }
}
