#if compiler(>=6)
internal import CYaml
#else
@_implementationOnly import CYaml
#endif

/// Bounds on a YAML document counted as if every alias were expanded,
/// checked on libyaml's event stream before the tree is composed.
///
/// Composing is cheap for aliases (they share the anchored node), but
/// hashing and comparing mapping keys walks them in full: a few hundred
/// bytes of `? &a [*b, *b, ...]` ("billion laughs" under complex keys)
/// would keep the loader busy for minutes. No lab file comes near these.
enum YAMLSizeLimit {
    /// Nodes in the document with aliases expanded.
    static let maximumNodes = 100_000
    /// Nesting depth with aliases expanded.
    static let maximumDepth = 100

    struct Exceeded: Error {
        var line: Int
        var column: Int
        var message: String
    }

    /// The first place the document grows past a limit, or nil when it stays
    /// within them (or is not valid YAML: composing reports that, with its place).
    static func check(_ text: String) -> Exceeded? {
        var bytes = Array(text.utf8)
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { return nil }
        defer { yaml_parser_delete(&parser) }
        return bytes.withUnsafeMutableBufferPointer { buffer -> Exceeded? in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
            // Per open collection: its anchor, its expanded size and depth so far.
            var open: [(anchor: String?, nodes: Int, depth: Int)] = []
            var anchors: [String: (nodes: Int, depth: Int)] = [:]
            var total = 0
            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else { return nil }
                defer { yaml_event_delete(&event) }
                let line = Int(event.start_mark.line) + 1, column = Int(event.start_mark.column) + 1
                var added: (nodes: Int, depth: Int)?
                switch event.type {
                case YAML_STREAM_END_EVENT:
                    return nil
                case YAML_SCALAR_EVENT:
                    added = (1, 1)
                    if let anchor = string(event.data.scalar.anchor) { anchors[anchor] = (1, 1) }
                case YAML_ALIAS_EVENT:
                    added = string(event.data.alias.anchor).flatMap { anchors[$0] } ?? (1, 1)
                case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                    let anchor = event.type == YAML_SEQUENCE_START_EVENT
                        ? string(event.data.sequence_start.anchor) : string(event.data.mapping_start.anchor)
                    open.append((anchor, 1, 1))
                    total += 1
                    if open.count > maximumDepth {
                        return Exceeded(line: line, column: column, message: "the YAML nests deeper than \(maximumDepth) levels; a lab file needs a few")
                    }
                case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                    guard let closed = open.popLast() else { return nil }
                    if let anchor = closed.anchor { anchors[anchor] = (closed.nodes, closed.depth) }
                    // Its nodes were counted into `total` as they came; only its parent grows now.
                    if !open.isEmpty {
                        open[open.count - 1].nodes += closed.nodes
                        open[open.count - 1].depth = max(open[open.count - 1].depth, closed.depth + 1)
                    }
                default:
                    break
                }
                guard let (nodes, depth) = added else { continue }
                total += nodes
                if !open.isEmpty {
                    open[open.count - 1].nodes += nodes
                    open[open.count - 1].depth = max(open[open.count - 1].depth, depth + 1)
                }
                if total > maximumNodes {
                    return Exceeded(
                        line: line, column: column,
                        message: "the YAML expands to more than \(maximumNodes) nodes through its aliases (*name); write the values out or use fewer aliases")
                }
                if open.count + depth > maximumDepth {
                    return Exceeded(line: line, column: column, message: "the YAML nests deeper than \(maximumDepth) levels through its aliases (*name)")
                }
            }
        }
    }

    static func string(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
        pointer.map { String(cString: $0) }
    }
}
