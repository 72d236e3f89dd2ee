/// One key combination as a user writes it (`ctrl-a`, `ctrl-alt-delete`,
/// `esc`, `f12`, `ret`, `shift-tab`) and as QEMU's `send-key` takes it: the
/// QKeyCode names of the keys pressed together, modifiers first.
public struct KeyCombo: Sendable, Hashable, CustomStringConvertible {
    /// QKeyCode names, pressed together in this order.
    public var qcodes: [String]

    public init(qcodes: [String]) { self.qcodes = qcodes }

    /// How the combination is written back: `ctrl-alt-delete`.
    public var description: String { qcodes.joined(separator: "-") }

    /// A combination that cannot be pressed: what was wrong and what is known.
    public struct ParseError: Error, Sendable, Hashable, CustomStringConvertible, ExitStatusCarrying {
        public var combo: String
        public var message: String

        public var description: String { "key '\(combo)': \(message)" }
        /// Bad input.
        public var exitStatus: ExitStatus { .usage }
    }

    /// Parses `ctrl-alt-delete` (parts joined by `-` or `+`, any case): each
    /// part a QKeyCode name, an alias (`enter`, `escape`, `space`, `del`,
    /// `pageup`, `win`, ...) or one character of the US layout's unshifted
    /// keys (`a`, `1`, `,`, `/`); only the last part may be other than a modifier.
    public init(parsing text: String) throws(ParseError) {
        let written = text.trimmingSpaces()
        guard !written.isEmpty else { throw ParseError(combo: text, message: "empty; name a key such as esc, ret, f12 or ctrl-a") }
        var parts = written.lowercased().split(separator: "-", omittingEmptySubsequences: false).flatMap { $0.split(separator: "+", omittingEmptySubsequences: false) }.map(String.init)
        // `ctrl--` and `ctrl-+`: a trailing empty part after a separator is the separator key itself.
        if parts.count >= 2, parts[parts.count - 1].isEmpty, parts[parts.count - 2].isEmpty {
            parts.removeLast(2)
            parts.append(written.hasSuffix("+") ? "equal" : "minus")
        }
        var qcodes: [String] = []
        for (index, part) in parts.enumerated() {
            guard !part.isEmpty else {
                throw ParseError(combo: text, message: "an empty part; join keys with '-' (ctrl-alt-delete) and write '-' itself as minus")
            }
            guard let qcode = Self.qcode(for: part) else {
                var message = "'\(part)' is not a key qlab knows"
                if let close = Self.closestName(to: part) { message += "; did you mean '\(close)'?" }
                throw ParseError(combo: text, message: message + "; keys: QEMU's key names (esc, ret, tab, spc, backspace, delete, up, f1-f12, a-z, 0-9, ctrl, alt, shift, meta_l, ...) and aliases (enter, escape, space, del, pageup, win)")
            }
            if index < parts.count - 1, !Self.modifiers.contains(qcode) {
                throw ParseError(combo: text, message: "'\(part)' is not a modifier; only the last key of a combination may be other than \(Self.modifierNames)")
            }
            if qcodes.contains(qcode) { throw ParseError(combo: text, message: "'\(part)' twice") }
            qcodes.append(qcode)
        }
        self.qcodes = qcodes
    }

    /// Parses several combinations, each a separate press (`esc`, `down down ret`: words split at spaces).
    public static func parseSequence(_ words: [String]) throws(ParseError) -> [KeyCombo] {
        var combos: [KeyCombo] = []
        for word in words {
            for part in word.split(whereSeparator: { $0 == " " || $0 == "\t" }) { combos.append(try KeyCombo(parsing: String(part))) }
        }
        return combos
    }

    static let modifiers: Set<String> = ["shift", "shift_r", "ctrl", "ctrl_r", "alt", "alt_r", "altgr", "altgr_r", "meta_l", "meta_r"]
    static let modifierNames = "ctrl, alt, shift, altgr, meta_l"

    /// QEMU's QKeyCode names (qapi/ui.json) a keyboard of a PC has.
    static let qcodeNames: [String] = {
        var names = ["shift", "shift_r", "alt", "alt_r", "altgr", "altgr_r", "ctrl", "ctrl_r", "meta_l", "meta_r", "menu",
                     "esc", "minus", "equal", "backspace", "tab", "bracket_left", "bracket_right", "ret", "semicolon",
                     "apostrophe", "grave_accent", "backslash", "comma", "dot", "slash", "asterisk", "spc", "caps_lock",
                     "num_lock", "scroll_lock", "kp_divide", "kp_multiply", "kp_subtract", "kp_add", "kp_enter", "kp_decimal",
                     "sysrq", "less", "home", "pgup", "pgdn", "end", "left", "up", "down", "right", "insert", "delete", "pause",
                     "print", "power", "sleep", "wake"]
        names += (1...12).map { "f\($0)" }
        names += (0...9).map { "kp_\($0)" }
        names += "abcdefghijklmnopqrstuvwxyz0123456789".map { String($0) }
        return names
    }()

    /// Other names people write for keys.
    static let aliases: [String: String] = [
        "enter": "ret", "return": "ret", "escape": "esc", "space": "spc", "del": "delete", "ins": "insert",
        "pageup": "pgup", "page_up": "pgup", "pagedown": "pgdn", "page_down": "pgdn", "control": "ctrl", "lctrl": "ctrl",
        "rctrl": "ctrl_r", "lalt": "alt", "ralt": "alt_r", "lshift": "shift", "rshift": "shift_r", "win": "meta_l",
        "super": "meta_l", "meta": "meta_l", "bksp": "backspace", "capslock": "caps_lock", "numlock": "num_lock",
        "scrolllock": "scroll_lock", "printscreen": "print", "prtsc": "print", "break": "pause",
    ]

    /// Every name a part may have, for "did you mean".
    static let names: [String] = qcodeNames + aliases.keys.sorted()

    /// The key name `part` was likely meant to be: within two edits for a word
    /// of three letters or more (`ctlr` is `ctrl`), one for a shorter one;
    /// never a one-letter key (which every misspelling starting with it would match).
    static func closestName(to part: String) -> String? {
        let candidates = names.filter { $0.count > 1 }
        let limit = part.count >= 3 ? 2 : 1
        let best = candidates.map { ($0, Suggestion.distance(part, $0)) }.filter { $0.1 <= limit }.min { $0.1 < $1.1 }
        return best?.0
    }

    static func qcode(for part: String) -> String? {
        if qcodeNames.contains(part) { return part }
        if let alias = aliases[part] { return alias }
        if part.count == 1, let key = TypedText.usLayout[part.first!], !key.shift { return key.qcode }
        return nil
    }
}
