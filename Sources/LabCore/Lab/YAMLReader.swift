import Yams

/// Typed reads from a Yams node tree that fail with a ``LabFileError``
/// naming the file, the node's line and column, and the key path.
struct YAMLReader {
    let file: String

    /// A node with the key path that reached it.
    struct Field {
        let node: Node
        let path: String
        /// The key's own node, for errors about the key itself (unknown keys).
        let keyNode: Node?

        func child(_ key: String, node: Node, keyNode: Node?) -> Field {
            Field(node: node, path: path.isEmpty ? key : path + "." + key, keyNode: keyNode)
        }
    }

    func error(_ field: Field, _ message: String) -> LabFileError {
        error(at: field.node, path: field.path, message)
    }

    func error(at node: Node?, path: String, _ message: String) -> LabFileError {
        LabFileError(file: file, line: node?.mark?.line, column: node?.mark?.column, keyPath: path, message: message)
    }

    func location(_ field: Field) -> SourceLocation {
        SourceLocation(file: file, line: field.node.mark?.line, column: field.node.mark?.column, keyPath: field.path)
    }

    /// True for YAML's null spellings (`key:` with nothing, `~`, `null`).
    static func isNull(_ node: Node) -> Bool {
        guard case .scalar(let scalar) = node, scalar.style == .plain else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }

    /// The mapping's entries in file order, after checking every key is one of `allowed`.
    func mapping(_ field: Field, allowed: [String]? = nil, what: String? = nil) throws(LabFileError) -> [(key: String, field: Field)] {
        guard case .mapping(let mapping) = field.node else {
            throw error(field, "expected a mapping (`key: value` lines)\(what.map { " describing \($0)" } ?? ""), found \(Self.kind(of: field.node))")
        }
        var entries: [(key: String, field: Field)] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let keyScalar) = keyNode else {
                throw error(at: keyNode, path: field.path, "keys must be plain words")
            }
            let key = keyScalar.string
            let child = field.child(key, node: value, keyNode: keyNode)
            if let allowed, !allowed.contains(key) {
                var message = "unknown key '\(key)'"
                if let close = Suggestion.closest(to: key, in: allowed) {
                    message += "; did you mean '\(close)'?"
                } else {
                    message += "; allowed here: \(allowed.joined(separator: ", "))"
                }
                throw error(at: keyNode, path: child.path, message)
            }
            entries.append((key, child))
        }
        return entries
    }

    func sequence(_ field: Field) throws(LabFileError) -> [Field] {
        guard case .sequence(let sequence) = field.node else {
            throw error(field, "expected a list (`[a, b]` or `- item` lines), found \(Self.kind(of: field.node))")
        }
        return sequence.enumerated().map { index, node in
            Field(node: node, path: "\(field.path)[\(index)]", keyNode: nil)
        }
    }

    func string(_ field: Field) throws(LabFileError) -> String {
        guard case .scalar(let scalar) = field.node else {
            throw error(field, "expected a text value, found \(Self.kind(of: field.node))")
        }
        return scalar.string
    }

    /// A string that must not be empty.
    func nonEmptyString(_ field: Field) throws(LabFileError) -> String {
        let value = try string(field)
        if value.isEmpty { throw error(field, "must not be empty") }
        return value
    }

    func bool(_ field: Field) throws(LabFileError) -> Bool {
        let value = try string(field)
        switch value.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error(field, "expected true or false, found '\(value)'")
        }
    }

    func int(_ field: Field, range: ClosedRange<Int>) throws(LabFileError) -> Int {
        let value = try string(field)
        guard let number = Int(value) else { throw error(field, "expected a whole number, found '\(value)'") }
        guard range.contains(number) else {
            throw error(field, "\(number) is out of range; use \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }

    func choice<T: RawRepresentable & CaseIterable>(_ field: Field, _ type: T.Type) throws(LabFileError) -> T
    where T.RawValue == String {
        let value = try string(field)
        if let result = T(rawValue: value) { return result }
        let all = T.allCases.map(\.rawValue)
        var message = "'\(value)' is not one of \(all.joined(separator: "|"))"
        if let close = Suggestion.closest(to: value, in: all) { message += "; did you mean '\(close)'?" }
        throw error(field, message)
    }

    func duration(_ field: Field) throws(LabFileError) -> Duration {
        let value = try string(field)
        guard let milliseconds = LabDuration.milliseconds(value) else {
            throw error(field, "'\(value)' is not a duration; write e.g. 30s, 2m, 1h or 500ms")
        }
        guard let duration = LabDuration.parse(value) else {
            let problem = milliseconds <= 0 ? "must be more than 0" : "is more than a week"
            throw error(field, "'\(value)' \(problem); write a duration from 1ms to \(Int(UserNumbers.maximumSeconds / 3600))h")
        }
        return duration
    }

    func byteSize(_ field: Field) throws(LabFileError) -> ByteSize {
        let value = try string(field)
        guard let size = ByteSize(parsing: value) else {
            throw error(field, "'\(value)' is not a size; write e.g. 512M, 1G or 1.5G")
        }
        return size
    }

    /// A list of strings; a single string is taken as a one-element list.
    func strings(_ field: Field) throws(LabFileError) -> [String] {
        if case .scalar = field.node { return [try string(field)] }
        var result: [String] = []
        for item in try sequence(field) { result.append(try string(item)) }
        return result
    }

    static func kind(of node: Node) -> String {
        switch node {
        case .scalar(let s): return "'\(s.string)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }
}
