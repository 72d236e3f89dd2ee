// libFuzzer target for QMPMessageDecoder (and the jansson coding under it).
//
// Built by scripts/fuzz together with Sources/QMP/*.swift as one module, so
// it sees the decoder's internals; libFuzzer supplies main(). An input is a
// raw byte stream as QEMU (or anything on the socket) might send it; the
// seeds in Fuzz/corpus/qmp-decoder are real QMP traffic.
//
// Invariants (a violation traps, and libFuzzer keeps the input):
// - no crash, no sanitizer report, whatever the bytes;
// - split independence: feeding the stream in pieces (sizes derived from
//   the input, so each input replays exactly) yields the same messages and
//   errors, in the same order, as one append, and the same finish();
// - finish() is defined: nil when only whitespace follows the last line
//   end, `.truncated` with the tail's size when a message was cut short;
// - every message survives a jansson round trip (serialise, parse again);
// - the guest agent's reset byte never crashes the decoder either.

#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func qmpDecoderFuzzTarget(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data.map(UnsafeRawPointer.init), count: data == nil ? 0 : size)
    var splits = SplitSequence(seed: fnv1a(input))

    // QMP framing, the default size limit and a tiny one (so that the
    // oversized-message path is reached by small inputs).
    for limit in [64 << 20, 48] {
        let whole = decode(input, limit: limit, split: false, pieces: &splits)
        let split = decode(input, limit: limit, split: true, pieces: &splits)
        check(whole.results == split.results, "split changed the messages (limit \(limit))")
        check(whole.finish == split.finish, "split changed finish() (limit \(limit))")
        checkFinish(input, limit: limit, whole.finish)
        for case .message(let message) in whole.results { checkRoundTrip(message) }
    }

    // Guest agent framing: a 0xFF byte discards what came before it. Which
    // messages survive depends on read boundaries by design; it must not crash.
    var agent = QMPMessageDecoder(resetByte: 0xFF)
    var offset = 0
    while offset < input.count {
        let n = min(splits.next(), input.count - offset)
        agent.append(UnsafeRawBufferPointer(rebasing: input[offset..<(offset + n)]))
        while let result = agent.next() { _ = describe(result) }
        offset += n
    }
    _ = agent.finish()
    return 0
}

/// One decoded item, comparable across runs.
enum Item: Equatable {
    case message(JSONObject)
    case error(QMPDecodingError)
}

func describe(_ result: Result<JSONObject, QMPDecodingError>) -> Item {
    switch result {
    case .success(let message): return .message(message)
    case .failure(let error):
        check(!error.description.isEmpty, "empty error description")
        return .error(error)
    }
}

/// Decodes `input` in one append, or (`split`) in pieces of the sizes
/// `pieces` yields, draining after each append as the reader thread does.
func decode(_ input: UnsafeRawBufferPointer, limit: Int, split: Bool, pieces: inout SplitSequence)
    -> (results: [Item], finish: QMPDecodingError?)
{
    var decoder = QMPMessageDecoder(maximumMessageSize: limit)
    var results: [Item] = []
    var offset = 0
    repeat {
        let n = split ? min(pieces.next(), input.count - offset) : input.count
        decoder.append(UnsafeRawBufferPointer(rebasing: input[offset..<(offset + n)]))
        while let result = decoder.next() { results.append(describe(result)) }
        offset += n
    } while offset < input.count
    return (results, decoder.finish())
}

/// finish() is nil exactly when no message was cut short.
func checkFinish(_ input: UnsafeRawBufferPointer, limit: Int, _ finish: QMPDecodingError?) {
    let tailStart = input.lastIndex(of: 0x0A).map { $0 + 1 } ?? 0
    let tail = input[tailStart...]
    let blank = tail.allSatisfy(QMPMessageDecoder.isWhitespace)
    if blank {
        check(finish == nil, "finish() reported \(String(describing: finish)) after a complete stream")
    } else if tail.count <= limit {
        check(finish == .truncated(byteCount: tail.count), "finish() is \(String(describing: finish)) for a \(tail.count)-byte tail")
    } else {
        // An oversized tail was already reported and is being discarded.
        check(finish == nil, "finish() reported \(String(describing: finish)) for a discarded oversized tail")
    }
}

/// Serialising a decoded message with jansson and parsing it again gives it back.
func checkRoundTrip(_ message: JSONObject) {
    let value = JSONValue.object(message)
    let bytes: [UInt8]
    do {
        bytes = try value.serialized()
    } catch {
        check(false, "a decoded message does not serialise: \(error)")
        return
    }
    guard case .success(let again) = bytes.withUnsafeBytes({ JSONValue.parseBuffer($0) }) else {
        check(false, "jansson's own output does not parse: \(String(decoding: bytes, as: UTF8.self))")
        return
    }
    check(again == value, "round trip changed \(value) into \(again)")
}

func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError("qmp-decoder-fuzz: invariant violated: \(message())") }
}

/// Piece sizes from a seed: mostly single bytes and small reads, sometimes large ones.
struct SplitSequence {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> Int {
        // splitmix64
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        switch z & 3 {
        case 0: return 1
        case 1: return 1 + Int((z >> 8) % 8)
        case 2: return 1 + Int((z >> 8) % 128)
        default: return 1 + Int((z >> 8) % 8192)
        }
    }
}

func fnv1a(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in bytes {
        hash ^= UInt64(byte)
        hash &*= 0x100_0000_01B3
    }
    return hash
}
