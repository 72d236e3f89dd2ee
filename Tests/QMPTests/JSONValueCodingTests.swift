import QMP
import Testing

@Suite("Codable over JSONValue")
struct JSONValueCodingTests {
    struct Inner: Codable, Equatable {
        var id: String
        var flags: [Bool]
    }

    struct Sample: Codable, Equatable {
        enum Mode: String, Codable { case fast, slow }
        var name: String
        var count: Int32
        var big: UInt64
        var ratio: Double
        var note: String?
        var mode: Mode
        var inner: Inner
        var list: [Inner]
        var table: [String: Int]

        enum CodingKeys: String, CodingKey {
            case name, count, big, ratio, note, mode, inner, list, table
        }
    }

    static let sample = Sample(
        name: "ä \"x\"", count: -3, big: UInt64.max, ratio: 1.5, note: nil, mode: .slow,
        inner: Inner(id: "a", flags: [true, false]), list: [Inner(id: "b", flags: [])], table: ["k": 7])

    /// Encoded through jansson and back: the same value; a nil optional is written as null.
    @Test func roundTripThroughJansson() throws {
        let tree = try JSONValueEncoder().encode(Self.sample)
        #expect(tree["note"] == .null)
        #expect(tree["big"] == .uint(UInt64.max))
        #expect(tree["mode"] == .string("slow"))
        #expect(tree["inner"]?["flags"] == .array([.bool(true), .bool(false)]))
        let text = try tree.jsonString(pretty: false)
        let back = try JSONValueDecoder().decode(Sample.self, from: try JSONValue.parse(text))
        #expect(back == Self.sample)
    }

    /// Missing keys, wrong types and integers out of range are errors naming the key.
    @Test func badInputIsAnError() throws {
        guard case .object(var object) = try JSONValueEncoder().encode(Self.sample) else { Issue.record("not an object"); return }
        object["count"] = .int(Int64(Int32.max) + 1)
        #expect(throws: DecodingError.self) { try JSONValueDecoder().decode(Sample.self, from: .object(object)) }
        object["count"] = .string("3")
        #expect(throws: DecodingError.self) { try JSONValueDecoder().decode(Sample.self, from: .object(object)) }
        object["count"] = nil
        do {
            _ = try JSONValueDecoder().decode(Sample.self, from: .object(object))
            Issue.record("decoded without count")
        } catch DecodingError.keyNotFound(let key, _) {
            #expect(key.stringValue == "count")
        }
        // A missing optional is nil.
        object["count"] = .int(1)
        object["note"] = nil
        #expect(try JSONValueDecoder().decode(Sample.self, from: .object(object)).note == nil)
    }
}
