/// Where a JSON value holds U+0000. JSON allows it in strings and keys
/// (`\u0000`), and qlab keeps it there (``JSONValue/parse(_:)-swift.type.method``);
/// a reader whose strings go on to system calls as C strings, where a NUL
/// would silently cut the text short, uses this to refuse it instead.
extension JSONValue {
    /// The path (`devices[1].name`, `` for the root) of the first string or
    /// object key holding a NUL, depth first in order; nil when there is none.
    public func pathOfFirstNUL() -> String? {
        switch self {
        case .string(let text): return text.utf8.contains(0) ? "" : nil
        case .array(let items):
            for (index, item) in items.enumerated() {
                if let inner = item.pathOfFirstNUL() { return "[\(index)]" + Self.joining(inner) }
            }
            return nil
        case .object(let object):
            for (key, value) in object {
                // A key is shown escaped: its own NUL would cut the message short.
                if key.utf8.contains(0) { return key.replacingAll("\u{0}", with: "\\u0000") }
                if let inner = value.pathOfFirstNUL() { return key + Self.joining(inner) }
            }
            return nil
        default: return nil
        }
    }

    private static func joining(_ inner: String) -> String {
        inner.isEmpty || inner.hasPrefix("[") ? inner : "." + inner
    }
}
