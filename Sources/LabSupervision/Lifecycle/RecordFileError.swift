import Platform
import QMP

/// A record qlab wrote (lab.json, launch.json, last-exit.json, lab-file.json)
/// that cannot be read back: names the file, the field (its JSON path, e.g.
/// `devices[1].state`) and what is wrong with it, and what to do.
public struct RecordFileError: Error, Sendable, CustomStringConvertible {
    public var path: String
    /// The JSON path of the field; empty when the file as a whole is unreadable.
    public var field: String
    public var problem: String

    public init(path: String, field: String, problem: String) {
        self.path = path
        self.field = field
        self.problem = problem
    }

    /// From a `DecodingError` of ``JSONValueDecoder`` (its coding path is the field).
    public init(path: String, decoding error: any Error) {
        guard let error = error as? DecodingError else {
            self.init(path: path, field: "", problem: "\(error)")
            return
        }
        switch error {
        case .keyNotFound(let key, let context):
            self.init(path: path, field: Self.field(context.codingPath + [key]), problem: "missing")
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            self.init(path: path, field: Self.field(context.codingPath), problem: context.debugDescription)
        @unknown default:
            self.init(path: path, field: "", problem: "\(error)")
        }
    }

    /// `devices[1].state` from a coding path.
    static func field(_ path: [any CodingKey]) -> String {
        var text = ""
        for key in path {
            if let index = key.intValue, key.stringValue == "\(index)" {
                text += "[\(index)]"
            } else {
                text += (text.isEmpty ? "" : ".") + key.stringValue
            }
        }
        return text
    }

    public var description: String {
        let what = field.isEmpty ? problem : "field \(field): \(problem)"
        return "\(path): \(what). qlab wrote this record and cannot read it back; `qlab down` (or removing the file) clears a lab's records"
    }

    /// Decodes `T` from the JSON text of the file at `path` (already read).
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], path: String) throws(RecordFileError) -> T {
        let json: JSONValue
        do {
            json = try JSONValue.parse(bytes)
        } catch {
            throw RecordFileError(path: path, field: "", problem: "not JSON: \(error)")
        }
        // JSON allows \u0000 and the parser keeps it, but a record's strings are paths,
        // names and argv for system calls, where a NUL would cut them short: refused.
        if let field = json.pathOfFirstNUL() {
            throw RecordFileError(path: path, field: field, problem: "holds a NUL character (\\u0000), which qlab never writes there")
        }
        do {
            return try JSONValueDecoder().decode(type, from: json)
        } catch {
            throw RecordFileError(path: path, decoding: error)
        }
    }
}
