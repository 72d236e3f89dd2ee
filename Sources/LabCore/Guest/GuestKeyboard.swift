import QMP

/// A running guest's keyboard: key combinations pressed and strings typed
/// through QMP `send-key` (openQA's `send_key` and `type_string`), for
/// firmware and option-ROM setup screens that only a keyboard reaches (a SCSI
/// card's Ctrl-A, SeaBIOS's Esc boot menu). QEMU hands the keys to the
/// guest's keyboard (the PS/2 keyboard of pc and q35).
public struct GuestKeyboard: Sendable {
    public let session: LabSession

    public init(session: LabSession) { self.session = session }

    /// Presses each combination in turn (each held 100 ms, QEMU's default).
    public func press(_ combos: [KeyCombo]) async throws {
        for combo in combos { try await session.qmp.sendKey(qcodes: combo.qcodes) }
    }

    /// Types `text` (``TypedText``): throws ``TypedText/Untypable`` before pressing anything when a character cannot be typed.
    public func type(_ text: String) async throws {
        try await press(try TypedText.combos(for: text))
    }

    /// Runs a test's `keys:` steps in order. Waits for the screen end at
    /// `deadline` (one deadline for the whole test); a wait that runs out
    /// throws ``GuestScreen/ScreenError/textNotShown(texts:seconds:screen:)``.
    public func perform(_ steps: [KeyStep], until deadline: ContinuousClock.Instant, seconds: Double) async throws {
        let screen = GuestScreen(session: session)
        for step in steps {
            switch step {
            case .press(let combos):
                try await press(combos)
            case .type(let text):
                try await type(text)
            case .wait(let text):
                try await screen.waitForTexts([text], until: deadline, seconds: seconds)
            case .pressUntil(let combos, let text):
                // Pressed again every half second (a firmware prompt shows for a
                // moment and drops keys pressed before it), until the screen shows `text`.
                var next = ContinuousClock.now
                try await screen.waitForTexts([text], until: deadline, seconds: seconds) {
                    guard ContinuousClock.now >= next else { return }
                    next = ContinuousClock.now + .milliseconds(500)
                    try await press(combos)
                }
            }
        }
    }
}

/// One step of a test's `keys:` (docs/lab-format.md, "Keys").
public enum KeyStep: Sendable, Hashable {
    /// `esc`, `down down ret`: combinations pressed in turn.
    case press([KeyCombo])
    /// `{text: "..."}`: typed.
    case type(String)
    /// `{wait: "..."}`: the screen must show the text before the next step.
    case wait(String)
    /// `{press: esc, until: "..."}`: pressed again and again until the screen shows the text.
    case pressUntil([KeyCombo], until: String)
}
