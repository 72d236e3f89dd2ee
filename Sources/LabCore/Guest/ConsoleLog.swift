import Platform

/// Reads the console log QEMU keeps for a lab (`logfile=` of the serial
/// chardev: everything the guest printed, whether or not a client was
/// connected).
///
/// QEMU writes the log raw, so it also holds qlab's command framing (the
/// echoed `printf ... '__QLAB_B' 'EGIN_...'` lines and the `__QLAB_BEGIN_`,
/// `__QLAB_END_`, `__QLAB_CHUNK_` marker lines). Everything a user reads —
/// `qlab console --log`, console tails in results and reports — goes through
/// ``withoutFraming(_:)``; only qlab's own waits read the raw bytes.
public enum ConsoleLog {
    /// Up to `limit` bytes of `path` from `offset` (`pread(2)`); nil when it cannot be opened.
    public static func read(_ path: String, from offset: Int, limit: Int = 4 << 20) -> [UInt8]? {
        guard let fd = try? FileDescriptor.open(path, .readOnly, options: .closeOnExec) else { return nil }
        defer { fd.closeIgnoringErrors() }
        var result: [UInt8] = []
        var position = max(0, offset)
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while result.count < limit {
            let wanted = min(chunk.count, limit - result.count)
            // swift-system's pread(2), retried on EINTR.
            guard let n = try? chunk.withUnsafeMutableBytes({ try fd.read(fromAbsoluteOffset: Int64(position), into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<wanted])) }),
                n > 0
            else { break }
            result.append(contentsOf: chunk[0..<n])
            position += n
        }
        return result
    }

    /// The file's size (`stat(2)`), 0 when it does not exist.
    public static func size(_ path: String) -> Int {
        FileSystem.size(path) ?? 0
    }

    /// The last `bytes` bytes of what the guest printed (framing left out) as
    /// text, `\r` dropped; only what lies at or after `offset` (where a boot
    /// or a run began), so a tail never shows an earlier run's output.
    public static func tail(_ path: String, bytes: Int = 4096, since offset: Int = 0) -> String {
        let size = size(path)
        // Framing lines are dropped after reading: read more than is shown.
        let start = max(max(0, offset), size - 4 * bytes)
        var raw = read(path, from: start, limit: size - start) ?? []
        // Started in the middle of a line: drop that part, it might be a piece of a marker.
        if start > max(0, offset), let newline = raw.firstIndex(of: 0x0A) { raw.removeSubrange(...newline) }
        let clean = withoutFraming(raw)
        return text(clean.suffix(bytes))
    }

    /// Console bytes as text: `\r` dropped, invalid UTF-8 replaced.
    static func text<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String {
        String(decoding: bytes.filter { $0 != 0x0D }, as: UTF8.self)
    }

    /// `bytes` without qlab's command framing: a line that holds a marker
    /// (`__QLAB_BEGIN_N__`, `__QLAB_END_N__=S`, `__QLAB_CHUNK_N_I__`) or the
    /// echo of a framing command (`printf '%s%s\n' '__QLAB_B' 'EGIN_N__'; ...`)
    /// keeps only what came before it on the line (a shell prompt), and is
    /// dropped when that is blank. Every other byte stays as it was (`\r`,
    /// escape sequences, a guest's own text that merely contains `__QLAB_`),
    /// so the result is still the log, less qlab's lines.
    public static func withoutFraming(_ bytes: [UInt8]) -> [UInt8] {
        let needle = Array("__QLAB_".utf8)
        guard bytes.withUnsafeBufferPointer({ ConsoleMatcher.find(needle, in: $0, from: 0, before: $0.count) }) != nil else { return bytes }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var lineStart = 0
        while lineStart < bytes.count {
            let newline = bytes[lineStart...].firstIndex(of: 0x0A)
            let lineEnd = newline.map { $0 + 1 } ?? bytes.count
            let line = bytes[lineStart..<lineEnd]
            if let cut = framingStart(line) {
                let before = bytes[lineStart..<cut]
                if before.contains(where: { !isBlank($0) }) {
                    out += before
                    if newline != nil { out.append(0x0A) }
                }
            } else {
                out += line
            }
            lineStart = lineEnd
        }
        return out
    }

    /// The split spellings of the markers in a framing command (``ConsoleCommandFraming``).
    static let echoedPieces = ["__QLAB_B' 'EGIN_", "__QLAB_E' 'ND_", "__QLAB_C' 'HUNK_"].map { Array($0.utf8) }

    /// Where qlab's framing begins in `line`, if it has any: a framing
    /// command's `printf '` (or the quoted marker piece), or a whole marker
    /// that ends the line.
    static func framingStart(_ line: ArraySlice<UInt8>) -> Int? {
        let needle = Array("__QLAB_".utf8)
        var from = line.startIndex
        while let marker = firstIndex(of: needle, in: line[from...]) {
            let rest = line[marker...]
            if marker > line.startIndex, line[marker - 1] == 0x27, echoedPieces.contains(where: { rest.starts(with: $0) }) {
                // The echo of a framing command: from its first printf on.
                let quote = marker - 1
                if let printf = firstIndex(of: Array("printf '".utf8), in: line[..<quote]) { return printf }
                return quote
            }
            if ConsoleCommandFraming.isMarker(Substring(String(decoding: rest, as: UTF8.self))) { return marker }
            from = marker + 1
        }
        return nil
    }

    static func firstIndex(of needle: [UInt8], in haystack: ArraySlice<UInt8>) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        var i = haystack.startIndex
        while i + needle.count <= haystack.endIndex {
            if haystack[i] == needle[0], haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }

    static func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0D || byte == 0x0A }
}
