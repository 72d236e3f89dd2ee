/// QEMU's option syntax, `value,key=value,key=value` (QemuOpts and keyval).
///
/// A value ends at a single comma; a comma inside a value is written twice.
/// `=` needs no escape inside a value (the key ends at the first `=`), so a
/// path with spaces, commas or `=` survives once its commas are doubled (and
/// the whole argument is quoted for a shell when printed).
public enum QEMUOptions {
    /// `a,b` → `a,,b`.
    public static func escape(_ value: String) -> String {
        value.replacing(",", with: ",,")
    }

    /// Joins an optional implied first value (e.g. a `-device` driver, a
    /// `-machine` type) and `key=value` pairs, escaping every value.
    public static func join(_ implied: String? = nil, _ pairs: [(String, QEMUValue)]) -> String {
        var parts: [String] = []
        if let implied { parts.append(escape(implied)) }
        for (key, value) in pairs { parts.append(key + "=" + escape(value.description)) }
        return parts.joined(separator: ",")
    }

    /// Splits an option string back into its parts, undoing the comma escape
    /// (the inverse of ``join(_:_:)``; used to check round trips).
    public static func split(_ option: String) -> [String] {
        var parts: [String] = []
        var current = ""
        var chars = option[...]
        while let c = chars.first {
            chars = chars.dropFirst()
            if c == "," {
                if chars.first == "," {
                    current.append(",")
                    chars = chars.dropFirst()
                } else {
                    parts.append(current)
                    current = ""
                }
            } else {
                current.append(c)
            }
        }
        parts.append(current)
        return parts
    }
}
