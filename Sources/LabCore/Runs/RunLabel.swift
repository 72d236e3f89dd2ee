/// A label of a run (`qlab run --label firmware=21.12.1`, `labels:` in the
/// lab file): what the run tested, carried into every report (JSON `labels`,
/// JUnit properties `label.KEY`, the HTML header) and every hook's
/// environment (`QLAB_LABEL_KEY`, the key upper-cased).
public struct RunLabel: Sendable, Hashable {
    public var key: String
    public var value: String

    public init(key: String, value: String) {
        self.key = key
        self.value = value
    }

    /// The most characters of a key and of a value.
    public static let maximumKeyLength = 64
    public static let maximumValueLength = 1024

    /// Why `key` cannot be a label's key; nil when it can. Lower-case letters,
    /// digits and `_`, starting with a letter: each key has its own
    /// environment variable (`QLAB_LABEL_` and the key upper-cased).
    public static func keyRefusal(_ key: String) -> String? {
        guard let first = key.unicodeScalars.first else { return "an empty key; write KEY=VALUE, e.g. firmware=21.12.1" }
        let allowed = key.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
        guard ("a"..."z").contains(first), allowed, key.count <= maximumKeyLength else {
            return "a key is lower-case letters, digits and _, starting with a letter, at most \(maximumKeyLength) characters (e.g. firmware, build_id)"
        }
        return nil
    }

    /// Why `value` cannot be a label's value; nil when it can: one line of text.
    public static func valueRefusal(_ value: String) -> String? {
        if value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            return "a value is one line of text (no newlines or control characters)"
        }
        if value.count > maximumValueLength { return "a value has at most \(maximumValueLength) characters" }
        return nil
    }

    /// `KEY=VALUE` from the command line, or why not.
    public static func parse(_ argument: String) -> Result<RunLabel, LabelError> {
        guard let equals = argument.firstIndex(of: "=") else {
            return .failure(LabelError(argument: argument, reason: "write KEY=VALUE, e.g. --label firmware=21.12.1"))
        }
        let key = String(argument[..<equals])
        let value = String(argument[argument.index(after: equals)...])
        if let refusal = keyRefusal(key) ?? valueRefusal(value) { return .failure(LabelError(argument: argument, reason: refusal)) }
        return .success(RunLabel(key: key, value: value))
    }

    public struct LabelError: Error, Sendable, CustomStringConvertible {
        public var argument: String
        public var reason: String
        public var description: String { "--label '\(argument)': \(reason)" }
    }

    /// The run's labels: the lab file's, each overridden by the command line's
    /// of the same key (in the file's place), then the command line's others
    /// in their order; a key given twice on the command line keeps its last value.
    public static func merged(file: [RunLabel], command: [RunLabel]) -> [RunLabel] {
        var labels = file
        for label in command {
            if let index = labels.firstIndex(where: { $0.key == label.key }) { labels[index].value = label.value } else { labels.append(label) }
        }
        return labels
    }

    /// `QLAB_LABEL_KEY=VALUE` for each label.
    public static func environment(_ labels: [RunLabel]) -> [String: String] {
        var environment: [String: String] = [:]
        for label in labels { environment["QLAB_LABEL_" + label.key.uppercased()] = label.value }
        return environment
    }
}
