/// Quoting for printing command lines a POSIX shell reads back unchanged.
public enum ShellQuoting {
    /// The word as is when it has only characters no shell treats specially,
    /// otherwise in single quotes (a `'` inside becomes `'\''`).
    public static func quote(_ word: String) -> String {
        if !word.isEmpty, word.unicodeScalars.allSatisfy(isSafe) { return word }
        return "'" + word.replacing("'", with: "'\\''") + "'"
    }

    /// The words quoted and joined by spaces, or one per line with `\` continuations
    /// (an option and its value kept together) when `multiline` is true.
    public static func join(_ words: [String], multiline: Bool = false) -> String {
        guard multiline else { return words.map(quote).joined(separator: " ") }
        var lines: [String] = []
        var index = 0
        while index < words.count {
            var line = quote(words[index])
            if index > 0, words[index].hasPrefix("-"), index + 1 < words.count, !words[index + 1].hasPrefix("-") {
                line += " " + quote(words[index + 1])
                index += 1
            }
            lines.append(line)
            index += 1
        }
        return lines.joined(separator: " \\\n    ")
    }

    private static func isSafe(_ c: Unicode.Scalar) -> Bool {
        guard c.isASCII else { return false }
        if ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c) { return true }
        return "_-+=:,./@%".unicodeScalars.contains(c)
    }
}
