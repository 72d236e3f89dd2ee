import Foundation
import QMP
import Testing

/// `\u0000` in JSON strings and keys is valid JSON (JSONTestSuite
/// `y_object_escaped_null_in_key`, `y_string_escaped_null`): qlab keeps the
/// NUL in the Swift `String`, writes it back escaped, and still refuses a raw
/// NUL byte in the text. Each place a JSON string becomes a Swift or C string.
@Suite("Escaped NUL in JSON")
struct EscapedNULTests {
    /// json_loadb refuses an escaped NUL in a key even with JSON_ALLOW_NUL; qlab's rescue keeps it.
    @Test func anEscapedNULInAKeyIsKept() throws {
        let value = try JSONValue.parse(#"{"foo\u0000bar": 42}"#)
        let object = try #require(value.objectValue)
        #expect(object.keys == ["foo\u{0}bar"])
        #expect(object.keys.first?.utf8.count == 7)
        #expect(object["foo\u{0}bar"] == 42)
        // Written back escaped (json_object_setn_new_nocheck takes the key's length), and read back equal.
        let text = try value.jsonString()
        #expect(text == #"{"foo\u0000bar":42}"#)
        #expect(try JSONValue.parse(text) == value)
        // Nested, in arrays, beside integers jansson cannot hold, and with whitespace before the colon.
        let nested = try JSONValue.parse(#"[{"a": {"\u0000" : 18446744073709551615, "b\u0000c": "d\u0000e"}}]"#)
        #expect(nested[0]?["a"]?["\u{0}"] == .uint(18_446_744_073_709_551_615))
        #expect(nested[0]?["a"]?["b\u{0}c"] == .string("d\u{0}e"))
    }

    @Test func anEscapedNULInAValueIsKept() throws {
        let value = try JSONValue.parse(#"{"a": "x\u0000y", "b": ["\u0000"]}"#)
        #expect(value["a"]?.stringValue == "x\u{0}y")
        #expect(value["a"]?.stringValue?.unicodeScalars.count == 3)
        #expect(value["b"]?[0]?.stringValue == "\u{0}")
        #expect(try value.jsonString() == #"{"a":"x\u0000y","b":["\u0000"]}"#)
    }

    /// A repeated key: jansson keeps the last value in the first one's place; rescued keys do the same.
    @Test func aRepeatedNULKeyBehavesLikeARepeatedKey() throws {
        let plain = try #require(try JSONValue.parse(#"{"a": 1, "b": 2, "a": 3}"#).objectValue)
        let nul = try #require(try JSONValue.parse(#"{"a\u0000": 1, "b": 2, "a\u0000": 3}"#).objectValue)
        #expect(plain.keys == ["a", "b"])
        #expect(plain["a"] == 3)
        #expect(nul.keys == ["a\u{0}", "b"])
        #expect(nul["a\u{0}"] == 3)
    }

    /// `\\u0000` is a backslash and the text u0000: no NUL, and jansson parses it as it is.
    @Test func anEscapedBackslashIsNotANUL() throws {
        let value = try JSONValue.parse(#"{"a\\u0000": "\\u0000"}"#)
        #expect(value.objectValue?.keys == [#"a\u0000"#])
        #expect(value[#"a\u0000"#]?.stringValue == #"\u0000"#)
        #expect(value.pathOfFirstNUL() == nil)
    }

    @Test func aRawNULByteIsStillAnError() {
        for text in ["{\"a\u{0}\": 1}", "{\"a\": \"x\u{0}y\"}", "123\u{0}", "[1,\u{0}2]"] {
            #expect {
                _ = try JSONValue.parse(Array(text.utf8))
            } throws: { error in
                (error as? JSONParseError)?.kind == .nulByte
            }
        }
        // An escaped NUL where no key may stand is still a syntax error, not a crash.
        #expect {
            _ = try JSONValue.parse(#"["a\u0000": 1]"#)
        } throws: { error in
            (error as? JSONParseError)?.kind == .invalidSyntax
        }
    }

    /// QMP's framing: a message with NULs in keys and values is delivered, a raw NUL is an error line.
    @Test func theDecoderDeliversEscapedNULsAndRejectsRawOnes() throws {
        var decoder = QMPMessageDecoder()
        let bytes = Array("{\"return\": {\"foo\\u0000bar\": \"x\\u0000\"}}\r\n{\"return\": \"a\u{0}b\"}\r\n".utf8)
        bytes.withUnsafeBytes { decoder.append($0) }
        let first = decoder.next()
        let message = try #require(try first?.get())
        #expect(message["return"]?["foo\u{0}bar"] == .string("x\u{0}"))
        let second = decoder.next()
        guard case .failure(.invalidJSON(let error, _))? = second else {
            Issue.record("expected a NUL-byte error, got \(String(describing: second))")
            return
        }
        #expect(error.kind == .nulByte)
    }

    /// Codable decoding keeps the NUL in a `String` (QMP replies); readers that pass strings to
    /// system calls refuse it by ``JSONValue/pathOfFirstNUL()`` (qlab's record files do).
    @Test func codableKeepsItAndThePathOfTheFirstNULIsFound() throws {
        struct Reply: Decodable, Equatable { var desc: String }
        let reply = try JSONValueDecoder().decode(Reply.self, from: try JSONValue.parse(#"{"desc": "Device '/a\u0000b' not found"}"#))
        #expect(reply.desc == "Device '/a\u{0}b' not found")
        #expect(try JSONValue.parse(#"{"devices": [{"name": "x"}, {"name": "y\u0000"}]}"#).pathOfFirstNUL() == "devices[1].name")
        #expect(try JSONValue.parse(#"{"a": {"k\u0000": 1}}"#).pathOfFirstNUL() == #"a.k\u0000"#)
        #expect(try JSONValue.parse(#""\u0000""#).pathOfFirstNUL() == "")
        #expect(try JSONValue.parse(#"{"a": ["b", {"c": 1}]}"#).pathOfFirstNUL() == nil)
    }

    /// QEMU takes `\u0000` in a string argument and sends it back escaped in its error:
    /// the client delivers QEMU's text with the NUL in it.
    @Test func realQEMUSendsAnEscapedNULBack() async throws {
        let qemu = try TestQEMU()
        defer { qemu.terminate() }
        let client = try await qemu.connect()
        defer { client.close() }
        do {
            _ = try await client.execute("qom-list", arguments: ["path": "/a\u{0}b"])
            Issue.record("qom-list of a path that does not exist succeeded")
        } catch QMPError.command(_, let errorClass, let description) {
            #expect(errorClass == "DeviceNotFound")
            #expect(description == "Device '/a\u{0}b' not found")
        }
    }
}
