import Platform
import QMP

/// Files handed on to the user (reports), written by ``OutputFile``'s one policy.
extension OutputFile {
    /// A JSON document (made by jansson, pretty, a final newline) at a path the user gave.
    public static func writeJSON(_ path: String, _ value: JSONValue) throws {
        var bytes = try value.serialized(pretty: true)
        bytes.append(0x0A)
        try write(path, bytes)
    }
}

extension OutputFileError {
    /// A refused path is bad input (2); a write that failed (a full disk, `/dev/full`) is a failure (1).
    public var exitStatus: ExitStatus { refused ? .usage : .failed }
}
