import Platform
import QMP

/// JSON files (records, reports) through jansson, written atomically.
extension FileSystem {
    /// `mode`: 0600 for records; reports a user hands on (run, merge, nested) are 0644 like JUnit files.
    public static func writeJSON(_ path: String, _ value: JSONValue, mode: UInt32 = 0o600) throws {
        var bytes = try value.serialized(pretty: true)
        bytes.append(0x0A)
        try writeAtomically(path, bytes, mode: mode)
    }

    public static func readJSON(_ path: String) -> JSONValue? {
        guard let bytes = HostFiles.readBytes(path, limit: 16 << 20) else { return nil }
        return try? JSONValue.parse(bytes)
    }
}
