/// A booting guest to its ready text, the way every command that waits for a
/// boot waits (`qlab run`, `qlab up --wait-ready`): the guest's `boot_keys`
/// pressed while its firmware runs, then its `firmware_ready` text on the
/// screen, then `ready` on the console, all within one `boot_timeout`.
public enum GuestBootWait {
    /// Waits for `guest` booting in `session` (started at `begin`) until its
    /// console says it is ready. A screen text that does not show throws
    /// ``GuestScreen/ScreenError/textNotShown(texts:seconds:screen:)``; the
    /// ready text that does not come throws as ``GuestConsole/waitForReady(_:since:timeout:)``.
    public static func untilReady(
        _ guest: LabGuest, session: LabSession, console: GuestConsole, since begin: ContinuousClock.Instant
    ) async throws -> GuestConsole.Readiness {
        let deadline = begin + guest.bootTimeout
        // Keys first: a firmware prompt (Press ESC, Ctrl-A) shows only while the firmware runs.
        if !guest.bootKeys.isEmpty {
            try await GuestKeyboard(session: session).perform(guest.bootKeys, until: deadline, seconds: guest.bootTimeout.inSeconds)
        }
        if let text = guest.firmwareReady {
            _ = try await GuestScreen(session: session).waitForTexts([text], until: deadline, seconds: guest.bootTimeout.inSeconds)
        }
        // What is left of boot_timeout after the screen (all of it when the guest has no screen steps).
        let screenSteps = guest.firmwareReady != nil || !guest.bootKeys.isEmpty
        return try await console.waitForReady(guest, timeout: screenSteps ? max(.milliseconds(1), deadline - ContinuousClock.now) : nil)
    }
}
