import QMP
import Testing

@Suite("Streaming decoder")
struct MessageDecoderTests {
    static let stream: [UInt8] = Array(
        """
        {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}\r
        {"return": {}, "id": "q1"}\r
        {"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r
        {"return": {"status": "paused", "running": false, "text": "ä\\n{\\"}"}, "id": "q2"}\r

        """.utf8)

    static func decodeAll(_ chunks: [[UInt8]]) -> [Result<JSONObject, QMPDecodingError>] {
        var decoder = QMPMessageDecoder()
        var out: [Result<JSONObject, QMPDecodingError>] = []
        for chunk in chunks {
            decoder.append(chunk)
            while let next = decoder.next() { out.append(next) }
        }
        return out
    }

    static func messages(_ results: [Result<JSONObject, QMPDecodingError>]) -> [JSONObject] {
        results.compactMap { try? $0.get() }
    }

    @Test func anySplitYieldsTheSameMessages() throws {
        let whole = Self.messages(Self.decodeAll([Self.stream]))
        #expect(whole.count == 4)
        #expect(whole[3]["return"]?["text"]?.stringValue == "ä\n{\"}")
        let bytewise = Self.messages(Self.decodeAll(Self.stream.map { [$0] }))
        #expect(bytewise == whole)
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var chunks: [[UInt8]] = []
            var rest = Self.stream[...]
            while !rest.isEmpty {
                let size = Int.random(in: 1...17, using: &generator)
                chunks.append(Array(rest.prefix(size)))
                rest = rest.dropFirst(size)
            }
            #expect(Self.messages(Self.decodeAll(chunks)) == whole)
        }
    }

    @Test func manyMessagesInOneRead() {
        let many = Array((0..<500).map { _ in Self.stream }.joined())
        #expect(Self.messages(Self.decodeAll([many])).count == 2000)
    }

    @Test func oneMebibyteMessage() throws {
        let big = String(repeating: "x", count: 1 << 20)
        let line = Array("{\"return\": \"\(big)\", \"id\": \"q9\"}\r\n".utf8)
        // Split into 4 KiB reads, as a socket would deliver it.
        var chunks: [[UInt8]] = []
        var index = 0
        while index < line.count {
            chunks.append(Array(line[index..<min(line.count, index + 4096)]))
            index += 4096
        }
        let out = Self.messages(Self.decodeAll(chunks))
        #expect(out.count == 1)
        #expect(out.first?["return"]?.stringValue?.utf8.count == 1 << 20)
    }

    @Test func badLinesGiveTypedErrorsAndDecodingGoesOn() {
        let good = Array("{\"return\": {}, \"id\": \"ok\"}\n".utf8)
        let cases: [([UInt8], JSONParseError.Kind?)] = [
            (Array("garbage here\n".utf8), .invalidSyntax),
            ([0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xC3, 0x28, 0x22, 0x7D, 0x0A], .invalidUTF8),  // {"a":"\xC3("}
            ([0x7B, 0x00, 0x7D, 0x0A], nil),  // a raw NUL byte
            (Array((String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000) + "\n").utf8), .tooDeep),
        ]
        for (bad, kind) in cases {
            let results = Self.decodeAll([bad + good])
            #expect(results.count == 2)
            guard case .failure(let error) = results[0] else {
                Issue.record("expected an error for \(bad.prefix(20))")
                continue
            }
            if let kind {
                guard case .invalidJSON(let parseError, _) = error else {
                    Issue.record("expected invalidJSON, got \(error)")
                    continue
                }
                #expect(parseError.kind == kind)
            }
            #expect((try? results[1].get())?["id"]?.stringValue == "ok")
        }
        let notObject = Self.decodeAll([Array("[1,2]\n".utf8)])
        guard case .failure(.notAnObject) = notObject.first else {
            Issue.record("expected notAnObject")
            return
        }
    }

    @Test func truncationIsReportedAtEnd() {
        var decoder = QMPMessageDecoder()
        decoder.append(Array("{\"return\": {}, \"id\": \"q1\"}\n{\"return\": {\"sta".utf8))
        #expect(decoder.next() != nil)
        #expect(decoder.next() == nil)
        #expect(decoder.finish() == .truncated(byteCount: 16))
        var clean = QMPMessageDecoder()
        clean.append(Array("{\"return\": {}}\r\n".utf8))
        _ = clean.next()
        #expect(clean.finish() == nil)
    }

    @Test func oversizedMessageIsSkipped() {
        var decoder = QMPMessageDecoder(maximumMessageSize: 1024)
        decoder.append(Array(repeating: UInt8(ascii: "a"), count: 3000))
        #expect(decoder.next() == .failure(.messageTooLarge(limit: 1024)))
        decoder.append(Array("bbb\n{\"return\": 1}\n".utf8))
        let next = decoder.next()
        #expect((try? next?.get())?["return"] == .int(1))
    }

    @Test func aNumberFollowedByANULIsAnError() throws {
        // jansson alone stops at the NUL after a top-level number and returns 123.
        #expect(throws: JSONParseError.self) { _ = try JSONValue.parse([0x31, 0x32, 0x33, 0x00]) }
        do {
            _ = try JSONValue.parse([0x31, 0x32, 0x33, 0x00])
        } catch {
            #expect(error.kind == .nulByte)
            #expect(error.position == 3)
        }
        let results = Self.decodeAll([[0x31, 0x32, 0x33, 0x00, 0x0A]])
        guard case .failure(.invalidJSON(let error, let excerpt)) = results.first else {
            Issue.record("expected invalid JSON, got \(results)")
            return
        }
        #expect(error.kind == .nulByte)
        #expect(excerpt == #"123\x00"#)
        #expect(throws: JSONParseError.self) { _ = try JSONValue.parse(#"{"a": 1}"# + "\u{0}") }
        // An escaped NUL inside a string is fine.
        #expect(try JSONValue.parse(#"{"a": "x\u0000y"}"#)["a"]?.stringValue == "x\u{0}y")
    }

    @Test func guestAgentDropsBadLinesOnlyBeforeTheFirstResetByte() {
        var decoder = QMPMessageDecoder(resetByte: 0xFF)
        // What an earlier client left half-read arrives in a read of its own.
        decoder.append(Array("\"partial\": 1}}\n{\"return\": 7}\n".utf8))
        #expect((try? decoder.next()?.get())?["return"] == .int(7))
        #expect(decoder.next() == nil)
        decoder.append([0xFF] + Array("{\"return\": 42}\nnot json\n".utf8))
        #expect((try? decoder.next()?.get())?["return"] == .int(42))
        guard case .failure(.invalidJSON) = decoder.next() else {
            Issue.record("a bad line after the reset byte was not reported")
            return
        }
    }

    @Test func guestAgentResetByteDiscardsPartialInput() {
        var decoder = QMPMessageDecoder(resetByte: 0xFF)
        decoder.append(Array("{\"return\": 12, \"partial".utf8) + [0xFF] + Array("{\"return\": 42}\n".utf8))
        let next = decoder.next()
        #expect((try? next?.get())?["return"] == .int(42))
        #expect(decoder.next() == nil)
    }
}

@Suite("JSON over jansson")
struct JSONValueTests {
    @Test func keyOrderIsKept() throws {
        let text = #"{"z": 1, "a": 2, "m": {"y": true, "b": null}}"#
        let value = try JSONValue.parse(text)
        #expect(value.objectValue?.keys == ["z", "a", "m"])
        #expect(value["m"]?.objectValue?.keys == ["y", "b"])
        #expect(try value.jsonString() == #"{"z":1,"a":2,"m":{"y":true,"b":null}}"#)
    }

    @Test func integersAboveInt64AreKeptExactly() throws {
        let text = #"{"size": 18446744073709551615, "mid": 9223372036854775808, "max": 9223372036854775807, "min": -9223372036854775808, "s": "18446744073709551615"}"#
        let value = try JSONValue.parse(text)
        #expect(value["size"] == .uint(UInt64.max))
        #expect(value["mid"] == .uint(UInt64(Int64.max) + 1))
        #expect(value["max"] == .int(Int64.max))
        #expect(value["min"] == .int(Int64.min))
        #expect(value["s"] == .string("18446744073709551615"))
        let back = try value.jsonString()
        #expect(back == #"{"size":18446744073709551615,"mid":9223372036854775808,"max":9223372036854775807,"min":-9223372036854775808,"s":"18446744073709551615"}"#)
        // Beyond UInt64: a double, documented.
        #expect(try JSONValue.parse("[184467440737095516150]")[0]?.doubleValue == 184467440737095516150.0)
    }

    @Test func buildAndSerialise() throws {
        let value: JSONValue = ["execute": "device_add", "arguments": ["driver": "lsi53c895a", "id": "a,b\"c", "addr": 5]]
        let text = try value.jsonString()
        #expect(text == #"{"execute":"device_add","arguments":{"driver":"lsi53c895a","id":"a,b\"c","addr":5}}"#)
        #expect(try JSONValue.parse(text) == value)
        #expect(throws: JSONEncodeError.self) { try JSONValue.double(.nan).serialized() }
    }

    @Test func containsMatchesPartialData() {
        let data: JSONValue = ["device": "scsi0", "path": "/machine/peripheral/scsi0", "n": 3]
        #expect(data.contains(["device": "scsi0"]))
        #expect(!data.contains(["device": "scsi1"]))
        #expect(!data.contains(["missing": 1]))
        #expect(data.contains(["n": .uint(3)]))
    }
}
