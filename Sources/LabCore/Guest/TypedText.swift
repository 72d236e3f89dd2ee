/// A string as the key presses that type it on a US-layout PC keyboard:
/// each character one `send-key`, with shift where the character needs it
/// (openQA's `type_string`). Only what that keyboard types is accepted:
/// printable ASCII, newline (ret) and tab.
public enum TypedText {
    /// A key of the US layout: its QKeyCode and whether shift is held.
    struct Key: Sendable, Hashable {
        var qcode: String
        var shift: Bool
    }

    /// The character cannot be typed.
    public struct Untypable: Error, Sendable, Hashable, CustomStringConvertible, ExitStatusCarrying {
        public var character: Character
        /// 1-based, in characters.
        public var position: Int

        public var description: String {
            let scalars = character.unicodeScalars.map { "U+" + String($0.value, radix: 16, uppercase: true).leftPadded(to: 4) }.joined(separator: " ")
            let shown = character.unicodeScalars.allSatisfy { $0.properties.generalCategory != .control } ? "'\(character)' " : ""
            return "cannot type \(shown)(\(scalars)) at character \(position): qlab types what a US-layout keyboard types (printable ASCII, newline, tab); press other keys by name (qlab keys LAB ctrl-a)"
        }

        /// Bad input.
        public var exitStatus: ExitStatus { .usage }
    }

    /// The combinations that type `text`, one per character; throws
    /// ``Untypable`` for the first character the layout has no key for.
    public static func combos(for text: String) throws(Untypable) -> [KeyCombo] {
        var combos: [KeyCombo] = []
        for (offset, character) in text.enumerated() {
            guard let key = usLayout[character] else { throw Untypable(character: character, position: offset + 1) }
            combos.append(KeyCombo(qcodes: key.shift ? ["shift", key.qcode] : [key.qcode]))
        }
        return combos
    }

    /// Every character the US layout types, with its key.
    static let usLayout: [Character: Key] = {
        var keys: [Character: Key] = ["\n": Key(qcode: "ret", shift: false), "\r\n": Key(qcode: "ret", shift: false), "\r": Key(qcode: "ret", shift: false), "\t": Key(qcode: "tab", shift: false), " ": Key(qcode: "spc", shift: false)]
        for letter in "abcdefghijklmnopqrstuvwxyz" {
            keys[letter] = Key(qcode: String(letter), shift: false)
            keys[Character(letter.uppercased())] = Key(qcode: String(letter), shift: true)
        }
        // The digit row: the digit, and with shift its symbol.
        for (digit, symbol) in zip("1234567890", "!@#$%^&*()") {
            keys[digit] = Key(qcode: String(digit), shift: false)
            keys[symbol] = Key(qcode: String(digit), shift: true)
        }
        let punctuation: [(Character, Character, String)] = [
            ("-", "_", "minus"), ("=", "+", "equal"), ("[", "{", "bracket_left"), ("]", "}", "bracket_right"),
            ("\\", "|", "backslash"), (";", ":", "semicolon"), ("'", "\"", "apostrophe"), ("`", "~", "grave_accent"),
            (",", "<", "comma"), (".", ">", "dot"), ("/", "?", "slash"),
        ]
        for (plain, shifted, qcode) in punctuation {
            keys[plain] = Key(qcode: qcode, shift: false)
            keys[shifted] = Key(qcode: qcode, shift: true)
        }
        return keys
    }()
}

extension String {
    /// The string with `0`s in front up to `width` characters.
    fileprivate func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
