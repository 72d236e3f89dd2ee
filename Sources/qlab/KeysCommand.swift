import ArgumentParser
import LabCore

/// `qlab keys LAB ctrl-a`, `qlab keys LAB --text "..."`.
struct KeysCommand: AsyncParsableCommand, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Press keys or type text on a running lab's guest keyboard (QMP send-key).",
        discussion: """
            Each KEY is a combination pressed and released before the next: QEMU's key names \
            (esc, ret, tab, spc, backspace, delete, up, down, pgup, f1-f12, a-z, 0-9, kp_enter, ...) \
            and aliases (enter, escape, space, del, pageup, win), joined with '-' for modifiers \
            (ctrl-a, ctrl-alt-delete, shift-tab). --text types a string as a US-layout keyboard \
            does, shift where a character needs it (printable ASCII, newline, tab; anything else \
            is refused before a key is pressed); it is typed before the KEYs. For firmware and \
            option-ROM setup screens (a SCSI card's Ctrl-A, SeaBIOS's Esc boot menu): watch them \
            with `qlab screen LAB --text --wait TEXT`; a test types with `keys:` (docs/lab-format.md).
            Examples:
              qlab keys demo esc
              qlab keys demo ctrl-alt-delete
              qlab keys demo --text "root" ret
            """)

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
    @Argument(help: "Key combinations, pressed in turn (esc, ctrl-a, f12, ret).") var keys: [String] = []
    @Option(help: ArgumentHelp("Type TEXT (before the KEYs).", valueName: "TEXT")) var text: String?

    /// The keys to press: --text's, then the KEYs'; a key or character that cannot be pressed is bad input here.
    func combos() throws -> [KeyCombo] {
        do {
            return try (text.map(TypedText.combos(for:)) ?? []) + KeyCombo.parseSequence(keys)
        } catch let error as TypedText.Untypable {
            throw ValidationError("--text: \(error)")
        } catch {
            throw ValidationError("\(error)")
        }
    }

    func validate() throws {
        if keys.isEmpty && text == nil { throw ValidationError("name the keys to press (esc, ctrl-a, f12) or give --text TEXT") }
        if text?.isEmpty == true { throw ValidationError("--text needs a text") }
        _ = try combos()
    }

    func run() async throws {
        let combos = try combos()
        try await withReadingSession(lab, command: "keys") { session in
            try await GuestKeyboard(session: session).press(combos)
        }
    }
}
