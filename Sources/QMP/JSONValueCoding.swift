/// `Codable` over ``JSONValue``: records are encoded to a JSON tree that
/// jansson then writes (``JSONValue/jsonString(pretty:)``), and decoded from
/// one jansson read, without Foundation's JSON coders. Keys are the coding
/// keys as given (types spell theirs in snake_case); a nil optional is
/// written as `null`, and a missing key or `null` decodes as nil.
public struct JSONValueEncoder: Sendable {
    public init() {}

    public func encode<T: Encodable>(_ value: T) throws -> JSONValue {
        let node = JSONNode()
        try value.encode(to: JSONTreeEncoder(node: node, codingPath: []))
        return node.resolved
    }
}

public struct JSONValueDecoder: Sendable {
    public init() {}

    public func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try T(from: JSONTreeDecoder(value: value, codingPath: []))
    }
}

// MARK: encoding

/// A value being built: containers fill their node in place, so nested
/// containers can be handed out before their contents are known.
final class JSONNode {
    enum Content {
        case value(JSONValue)
        case object([(String, JSONNode)])
        case array([JSONNode])
    }
    var content: Content = .value(.null)

    var resolved: JSONValue {
        switch content {
        case .value(let value): return value
        case .object(let entries): return .object(JSONObject(entries.map { ($0.0, $0.1.resolved) }))
        case .array(let items): return .array(items.map(\.resolved))
        }
    }

    func child(forKey key: String) -> JSONNode {
        if case .object(var entries) = content {
            if let existing = entries.first(where: { $0.0 == key }) { return existing.1 }
            let node = JSONNode()
            entries.append((key, node))
            content = .object(entries)
            return node
        }
        let node = JSONNode()
        content = .object([(key, node)])
        return node
    }

    func appended() -> JSONNode {
        let node = JSONNode()
        if case .array(var items) = content {
            items.append(node)
            content = .array(items)
        } else {
            content = .array([node])
        }
        return node
    }

    func makeObject() { if case .object = content {} else { content = .object([]) } }
    func makeArray() { if case .array = content {} else { content = .array([]) } }
}

struct JSONTreeEncoder: Encoder {
    let node: JSONNode
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        node.makeObject()
        return KeyedEncodingContainer(Keyed<Key>(node: node, codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        node.makeArray()
        return Unkeyed(node: node, codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { Single(node: node, codingPath: codingPath) }

    static func scalar<T: Encodable>(_ value: T, node: JSONNode, codingPath: [any CodingKey]) throws {
        switch value {
        case let v as String: node.content = .value(.string(v))
        case let v as Bool: node.content = .value(.bool(v))
        case let v as Double: node.content = .value(.double(v))
        case let v as Float: node.content = .value(.double(Double(v)))
        case let v as Int: node.content = .value(.int(Int64(v)))
        case let v as Int8: node.content = .value(.int(Int64(v)))
        case let v as Int16: node.content = .value(.int(Int64(v)))
        case let v as Int32: node.content = .value(.int(Int64(v)))
        case let v as Int64: node.content = .value(.int(v))
        case let v as UInt: node.content = .value(JSONValue(UInt64(v)))
        case let v as UInt8: node.content = .value(.int(Int64(v)))
        case let v as UInt16: node.content = .value(.int(Int64(v)))
        case let v as UInt32: node.content = .value(.int(Int64(v)))
        case let v as UInt64: node.content = .value(JSONValue(v))
        default: try value.encode(to: JSONTreeEncoder(node: node, codingPath: codingPath))
        }
    }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let node: JSONNode
        let codingPath: [any CodingKey]

        mutating func encodeNil(forKey key: Key) throws { node.child(forKey: key.stringValue).content = .value(.null) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            try JSONTreeEncoder.scalar(value, node: node.child(forKey: key.stringValue), codingPath: codingPath + [key])
        }
        // A nil optional is written as null (the records' on-disk shape), not left out.
        mutating func encodeIfPresent<T: Encodable>(_ value: T?, forKey key: Key) throws {
            if let value { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
        }
        mutating func encodeIfPresent(_ value: String?, forKey key: Key) throws {
            if let value { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
        }
        mutating func encodeIfPresent(_ value: Bool?, forKey key: Key) throws {
            if let value { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
        }
        mutating func encodeIfPresent(_ value: Double?, forKey key: Key) throws {
            if let value { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
        }
        mutating func encodeIfPresent(_ value: Int?, forKey key: Key) throws {
            if let value { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
        }
        mutating func encodeIfPresent(_ value: Int32?, forKey key: Key) throws {
            if let value { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
        }
        mutating func encodeIfPresent(_ value: Int64?, forKey key: Key) throws {
            if let value { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
        }
        mutating func encodeIfPresent(_ value: UInt64?, forKey key: Key) throws {
            if let value { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            let child = node.child(forKey: key.stringValue)
            child.makeObject()
            return KeyedEncodingContainer(Keyed<NestedKey>(node: child, codingPath: codingPath + [key]))
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            let child = node.child(forKey: key.stringValue)
            child.makeArray()
            return Unkeyed(node: child, codingPath: codingPath + [key])
        }
        mutating func superEncoder() -> any Encoder { JSONTreeEncoder(node: node.child(forKey: "super"), codingPath: codingPath) }
        mutating func superEncoder(forKey key: Key) -> any Encoder {
            JSONTreeEncoder(node: node.child(forKey: key.stringValue), codingPath: codingPath + [key])
        }
    }

    struct Unkeyed: UnkeyedEncodingContainer {
        let node: JSONNode
        let codingPath: [any CodingKey]
        var count: Int {
            if case .array(let items) = node.content { return items.count }
            return 0
        }

        mutating func encodeNil() throws { node.appended().content = .value(.null) }
        mutating func encode<T: Encodable>(_ value: T) throws {
            try JSONTreeEncoder.scalar(value, node: node.appended(), codingPath: codingPath + [IndexKey(count)])
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let child = node.appended()
            child.makeObject()
            return KeyedEncodingContainer(Keyed<NestedKey>(node: child, codingPath: codingPath))
        }
        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let child = node.appended()
            child.makeArray()
            return Unkeyed(node: child, codingPath: codingPath)
        }
        mutating func superEncoder() -> any Encoder { JSONTreeEncoder(node: node.appended(), codingPath: codingPath) }
    }

    struct Single: SingleValueEncodingContainer {
        let node: JSONNode
        let codingPath: [any CodingKey]
        mutating func encodeNil() throws { node.content = .value(.null) }
        mutating func encode<T: Encodable>(_ value: T) throws { try JSONTreeEncoder.scalar(value, node: node, codingPath: codingPath) }
    }
}

struct IndexKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(_ index: Int) {
        stringValue = String(index)
        intValue = index
    }
    init?(stringValue: String) { return nil }
    init?(intValue: Int) { self.init(intValue) }
}

// MARK: decoding

struct JSONTreeDecoder: Decoder {
    let value: JSONValue
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let object) = value else { throw Self.mismatch(JSONObject.self, value, codingPath) }
        return KeyedDecodingContainer(Keyed<Key>(object: object, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let items) = value else { throw Self.mismatch([JSONValue].self, value, codingPath) }
        return Unkeyed(items: items, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { Single(value: value, codingPath: codingPath) }

    static func mismatch(_ type: Any.Type, _ value: JSONValue, _ path: [any CodingKey]) -> DecodingError {
        .typeMismatch(type, .init(codingPath: path, debugDescription: "expected \(type), found \(value)"))
    }

    static func integer<T: FixedWidthInteger>(_ type: T.Type, _ value: JSONValue, _ path: [any CodingKey]) throws -> T {
        let result: T?
        switch value {
        case .int(let v): result = T(exactly: v)
        case .uint(let v): result = T(exactly: v)
        case .double(let v): result = T(exactly: v)
        default: throw mismatch(type, value, path)
        }
        guard let result else {
            throw DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: "\(value) does not fit \(type)"))
        }
        return result
    }

    static func decode<T: Decodable>(_ type: T.Type, _ value: JSONValue, _ path: [any CodingKey]) throws -> T {
        switch type {
        case is String.Type:
            guard case .string(let v) = value else { throw mismatch(type, value, path) }
            return v as! T
        case is Bool.Type:
            guard case .bool(let v) = value else { throw mismatch(type, value, path) }
            return v as! T
        case is Double.Type, is Float.Type:
            let number: Double
            switch value {
            case .double(let v): number = v
            case .int(let v): number = Double(v)
            case .uint(let v): number = Double(v)
            default: throw mismatch(type, value, path)
            }
            return (type is Float.Type ? Float(number) as Any : number as Any) as! T
        case is Int.Type: return try integer(Int.self, value, path) as! T
        case is Int8.Type: return try integer(Int8.self, value, path) as! T
        case is Int16.Type: return try integer(Int16.self, value, path) as! T
        case is Int32.Type: return try integer(Int32.self, value, path) as! T
        case is Int64.Type: return try integer(Int64.self, value, path) as! T
        case is UInt.Type: return try integer(UInt.self, value, path) as! T
        case is UInt8.Type: return try integer(UInt8.self, value, path) as! T
        case is UInt16.Type: return try integer(UInt16.self, value, path) as! T
        case is UInt32.Type: return try integer(UInt32.self, value, path) as! T
        case is UInt64.Type: return try integer(UInt64.self, value, path) as! T
        default: return try T(from: JSONTreeDecoder(value: value, codingPath: path))
        }
    }

    struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let object: JSONObject
        let codingPath: [any CodingKey]
        var allKeys: [Key] { object.keys.compactMap(Key.init(stringValue:)) }

        func contains(_ key: Key) -> Bool { object[key.stringValue] != nil }

        func value(_ key: Key) throws -> JSONValue {
            guard let value = object[key.stringValue] else {
                throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "no \"\(key.stringValue)\""))
            }
            return value
        }

        func decodeNil(forKey key: Key) throws -> Bool { (object[key.stringValue] ?? .null) == .null }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            try JSONTreeDecoder.decode(type, try value(key), codingPath + [key])
        }
        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            try JSONTreeDecoder(value: try value(key), codingPath: codingPath + [key]).container(keyedBy: type)
        }
        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
            try JSONTreeDecoder(value: try value(key), codingPath: codingPath + [key]).unkeyedContainer()
        }
        func superDecoder() throws -> any Decoder { JSONTreeDecoder(value: object["super"] ?? .null, codingPath: codingPath) }
        func superDecoder(forKey key: Key) throws -> any Decoder {
            JSONTreeDecoder(value: object[key.stringValue] ?? .null, codingPath: codingPath + [key])
        }
    }

    struct Unkeyed: UnkeyedDecodingContainer {
        let items: [JSONValue]
        let codingPath: [any CodingKey]
        var currentIndex = 0
        var count: Int? { items.count }
        var isAtEnd: Bool { currentIndex >= items.count }

        mutating func next() throws -> JSONValue {
            guard !isAtEnd else {
                throw DecodingError.valueNotFound(JSONValue.self, .init(codingPath: codingPath, debugDescription: "the array ends at \(currentIndex)"))
            }
            defer { currentIndex += 1 }
            return items[currentIndex]
        }

        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, items[currentIndex] == .null else { return false }
            currentIndex += 1
            return true
        }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
            let path = codingPath + [IndexKey(currentIndex)]
            return try JSONTreeDecoder.decode(type, try next(), path)
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
            try JSONTreeDecoder(value: try next(), codingPath: codingPath).container(keyedBy: type)
        }
        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
            try JSONTreeDecoder(value: try next(), codingPath: codingPath).unkeyedContainer()
        }
        mutating func superDecoder() throws -> any Decoder { JSONTreeDecoder(value: try next(), codingPath: codingPath) }
    }

    struct Single: SingleValueDecodingContainer {
        let value: JSONValue
        let codingPath: [any CodingKey]
        func decodeNil() -> Bool { value == .null }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try JSONTreeDecoder.decode(type, value, codingPath) }
    }
}
