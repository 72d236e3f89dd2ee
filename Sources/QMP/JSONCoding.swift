import CJansson

#if canImport(Glibc)
import Glibc
#endif

/// Why bytes did not parse as JSON. Carries jansson's own position and text.
public struct JSONParseError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        case invalidSyntax
        case invalidUTF8
        case nulByte
        case tooDeep
        case truncated
        case trailingData
        case numericOverflow
        case other
    }

    public var kind: Kind
    /// jansson's message (`json_error_t.text`).
    public var text: String
    public var line: Int
    public var column: Int
    public var position: Int

    public var description: String { "\(text) at line \(line), column \(column)" }
}

/// An error while serialising a value (jansson rejects NaN and infinities).
public struct JSONEncodeError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

extension JSONValue {
    /// Parses one JSON text with `json_loadb`. Integers outside `Int64` are
    /// rescued first (see ``JSONValue``); a raw NUL byte is an error.
    public static func parse<Bytes: Collection<UInt8>>(_ bytes: Bytes) throws(JSONParseError) -> JSONValue {
        let result: Result<JSONValue, JSONParseError>? = bytes.withContiguousStorageIfAvailable { buffer in
            parseBuffer(UnsafeRawBufferPointer(buffer))
        }
        if let result { return try result.get() }
        let copy = Array(bytes)
        return try copy.withUnsafeBytes { parseBuffer($0) }.get()
    }

    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        var text = text
        let result = text.withUTF8 { parseBuffer(UnsafeRawBufferPointer($0)) }
        return try result.get()
    }

    /// What was swapped out of the text before jansson saw it.
    struct Rescued {
        /// Integers outside Int64 (``BigIntegerRescue``), by token index.
        var integers: [JSONValue] = []
        /// Object keys with an escaped NUL (``NULKeyRescue``), by token index.
        var keys: [String] = []
    }

    static func parseBuffer(_ buffer: UnsafeRawBufferPointer) -> Result<JSONValue, JSONParseError> {
        let nulKeys = NULKeyRescue.scan(buffer)
        if nulKeys.isEmpty {
            return parseNumbers(buffer, keys: [])
        }
        let rewritten = NULKeyRescue.rewrite(buffer, replacing: nulKeys)
        return rewritten.withUnsafeBytes { parseNumbers($0, keys: nulKeys.map(\.key)) }
    }

    private static func parseNumbers(_ buffer: UnsafeRawBufferPointer, keys: [String]) -> Result<JSONValue, JSONParseError> {
        let bigIntegers = BigIntegerRescue.scan(buffer)
        if bigIntegers.isEmpty {
            return loadWithJansson(buffer, rescued: Rescued(keys: keys))
        }
        let rewritten = BigIntegerRescue.rewrite(buffer, replacing: bigIntegers)
        return rewritten.withUnsafeBytes { loadWithJansson($0, rescued: Rescued(integers: bigIntegers.map(\.value), keys: keys)) }
    }

    /// One `json_loadb` with `JSON_ALLOW_NUL`: an escaped NUL (`\u0000`) in a
    /// string value is kept (``init(jansson:rescued:)`` reads strings by
    /// their length); a raw NUL byte in the text is an error.
    static func loadWithJansson(_ buffer: UnsafeRawBufferPointer, rescued: Rescued) -> Result<JSONValue, JSONParseError> {
        if buffer.isEmpty {
            return .failure(JSONParseError(kind: .truncated, text: "empty input", line: 1, column: 0, position: 0))
        }
        // JSON text never holds a raw NUL (a string escapes it as \u0000), but
        // jansson stops at one after a top-level number: `123\0` would load as 123.
        if let nul = memchr(buffer.baseAddress!, 0, buffer.count) {
            let position = buffer.baseAddress!.distance(to: UnsafeRawPointer(nul))
            let before = UnsafeRawBufferPointer(rebasing: buffer[..<position])
            let line = 1 + before.count { $0 == 0x0A }
            let column = position - (before.lastIndex(of: 0x0A).map { $0 + 1 } ?? 0) + 1
            return .failure(JSONParseError(kind: .nulByte, text: "NUL byte", line: line, column: column, position: position))
        }
        var error = json_error_t()
        let flags = JanssonFlags.decodeAny | JanssonFlags.allowNul
        guard let root = json_loadb(buffer.baseAddress!.assumingMemoryBound(to: CChar.self), buffer.count, flags, &error) else {
            return .failure(JSONParseError(error))
        }
        defer { qlab_json_decref(root) }
        return .success(JSONValue(jansson: root, rescued: rescued))
    }

    /// Converts a jansson tree. Strings equal to a rescue token become the
    /// rescued integers, keys equal to one the rescued keys. Strings and keys
    /// are read by their length, so an escaped NUL stays in the Swift `String`.
    init(jansson json: UnsafeMutablePointer<json_t>, rescued: Rescued) {
        switch json_type(UInt32(qlab_json_typeof(json))) {
        case JSON_OBJECT:
            var object = JSONObject()
            object.entries.reserveCapacity(json_object_size(json))
            var iterator = json_object_iter(json)
            while let current = iterator {
                let keyPointer = json_object_iter_key(current)!
                let keyLength = json_object_iter_key_len(current)
                let key = String(decoding: UnsafeRawBufferPointer(start: keyPointer, count: keyLength), as: UTF8.self)
                let child = JSONValue(jansson: json_object_iter_value(current)!, rescued: rescued)
                if !rescued.keys.isEmpty, let index = NULKeyRescue.index(ofToken: key), rescued.keys.indices.contains(index) {
                    // As jansson does for a repeated key: the last value wins, in the first one's place.
                    object[rescued.keys[index]] = child
                } else {
                    object.appendUnchecked(key, child)
                }
                iterator = json_object_iter_next(json, current)
            }
            self = .object(object)
        case JSON_ARRAY:
            let count = json_array_size(json)
            var array: [JSONValue] = []
            array.reserveCapacity(count)
            for index in 0..<count {
                array.append(JSONValue(jansson: json_array_get(json, index)!, rescued: rescued))
            }
            self = .array(array)
        case JSON_STRING:
            let length = json_string_length(json)
            let string = String(
                decoding: UnsafeRawBufferPointer(start: json_string_value(json), count: length), as: UTF8.self)
            if !rescued.integers.isEmpty, let index = BigIntegerRescue.index(ofToken: string), rescued.integers.indices.contains(index) {
                self = rescued.integers[index]
            } else {
                self = .string(string)
            }
        case JSON_INTEGER:
            self = .int(Int64(json_integer_value(json)))
        case JSON_REAL:
            self = .double(json_real_value(json))
        case JSON_TRUE:
            self = .bool(true)
        case JSON_FALSE:
            self = .bool(false)
        default:
            self = .null
        }
    }

    /// Builds the jansson tree for this value (new reference). Unsigned
    /// integers above Int64.max, and every double, become tokens substituted
    /// after dumping: jansson prints doubles with 17 significant digits
    /// (0.123 as 0.12299999999999999); a double's token is replaced by the
    /// shortest text that reads back as the same double (its bit pattern is
    /// kept in `bigIntegers`, see ``BigIntegerRescue/doubleToken(_:)``).
    func makeJansson(bigIntegers: inout [UInt64]) throws(JSONEncodeError) -> UnsafeMutablePointer<json_t> {
        switch self {
        case .null: return json_null()
        case .bool(let b): return b ? json_true() : json_false()
        case .int(let i): return json_integer(json_int_t(i))
        case .uint(let u):
            if let small = Int64(exactly: u) { return json_integer(json_int_t(small)) }
            bigIntegers.append(u)
            let token = BigIntegerRescue.token(bigIntegers.count - 1)
            return token.withCString { json_string($0) }
        case .double(let d):
            guard d.isFinite else {
                throw JSONEncodeError(description: "JSON has no representation for \(d)")
            }
            bigIntegers.append(d.bitPattern)
            let token = BigIntegerRescue.doubleToken(bigIntegers.count - 1)
            return token.withCString { json_string($0) }
        case .string(let s):
            var s = s
            return s.withUTF8 { utf8 in
                utf8.withMemoryRebound(to: CChar.self) { json_stringn_nocheck($0.baseAddress ?? JanssonFlags.emptyCString, utf8.count) }
            }
        case .array(let array):
            let json = json_array()!
            for element in array {
                do {
                    let child = try element.makeJansson(bigIntegers: &bigIntegers)
                    json_array_append_new(json, child)
                } catch {
                    qlab_json_decref(json)
                    throw error
                }
            }
            return json
        case .object(let object):
            let json = json_object()!
            for (key, value) in object {
                do {
                    let child = try value.makeJansson(bigIntegers: &bigIntegers)
                    var key = key
                    key.withUTF8 { utf8 in
                        utf8.withMemoryRebound(to: CChar.self) {
                            _ = json_object_setn_new_nocheck(json, $0.baseAddress ?? JanssonFlags.emptyCString, utf8.count, child)
                        }
                    }
                } catch {
                    qlab_json_decref(json)
                    throw error
                }
            }
            return json
        }
    }

    /// Serialises with `json_dumpb`, compact unless `pretty`, keys in order.
    public func serialized(pretty: Bool = false) throws(JSONEncodeError) -> [UInt8] {
        var bigIntegers: [UInt64] = []
        let root = try makeJansson(bigIntegers: &bigIntegers)
        defer { qlab_json_decref(root) }
        let flags = JanssonFlags.encodeAny | (pretty ? JanssonFlags.indent2 : JanssonFlags.compact)
        let size = json_dumpb(root, nil, 0, flags)
        guard size > 0 else { throw JSONEncodeError(description: "json_dumpb failed") }
        var bytes = [UInt8](repeating: 0, count: size)
        _ = bytes.withUnsafeMutableBytes { json_dumpb(root, $0.baseAddress!.assumingMemoryBound(to: CChar.self), size, flags) }
        if !bigIntegers.isEmpty {
            bytes = BigIntegerRescue.substituteTokens(in: bytes, with: bigIntegers)
        }
        return bytes
    }

    /// The compact serialisation as a string (`try?`-friendly for values
    /// built from Swift, which only fail on NaN or infinity).
    public func jsonString(pretty: Bool = false) throws(JSONEncodeError) -> String {
        String(decoding: try serialized(pretty: pretty), as: UTF8.self)
    }
}

extension JSONValue: CustomStringConvertible {
    public var description: String { (try? jsonString()) ?? "<unserialisable JSON>" }
}

extension JSONObject {
    /// Appends without a duplicate check: jansson already made keys unique.
    mutating func appendUnchecked(_ key: String, _ value: JSONValue) {
        entries.append((key, value))
    }
}

extension JSONParseError {
    init(_ error: json_error_t) {
        var error = error
        // jansson quotes the offending input ("invalid token near '...'"): escaped, like excerpts.
        let text = withUnsafeBytes(of: &error.text) { raw in
            QMPMessageDecoder.excerpt(UnsafeRawBufferPointer(rebasing: raw.prefix(while: { $0 != 0 })), limit: raw.count)
        }
        let kind: Kind
        switch json_error_code(UInt32(qlab_json_error_code(&error))) {
        case json_error_invalid_utf8: kind = .invalidUTF8
        case json_error_null_character, json_error_null_byte_in_key: kind = .nulByte
        case json_error_stack_overflow: kind = .tooDeep
        case json_error_premature_end_of_input: kind = .truncated
        case json_error_end_of_input_expected: kind = .trailingData
        case json_error_numeric_overflow: kind = .numericOverflow
        case json_error_invalid_syntax: kind = text.contains("maximum parsing depth") ? .tooDeep : .invalidSyntax
        default: kind = text.contains("maximum parsing depth") ? .tooDeep : .other
        }
        self.init(kind: kind, text: text, line: Int(error.line), column: Int(error.column), position: Int(error.position))
    }
}

/// jansson's flag macros (jansson.h), which Swift does not import as constants.
enum JanssonFlags {
    static let decodeAny: Int = 0x4       // JSON_DECODE_ANY
    static let allowNul: Int = 0x10       // JSON_ALLOW_NUL
    static let compact: Int = 0x20        // JSON_COMPACT
    static let indent2: Int = 2           // JSON_INDENT(2)
    static let encodeAny: Int = 0x200     // JSON_ENCODE_ANY
    /// A valid pointer for zero-length strings, whose buffer may have no base address.
    nonisolated(unsafe) static let emptyCString: UnsafePointer<CChar> = {
        let pointer = UnsafeMutablePointer<CChar>.allocate(capacity: 1)
        pointer.pointee = 0
        return UnsafePointer(pointer)
    }()
}
