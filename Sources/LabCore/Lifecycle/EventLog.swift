import Platform
import QMP

/// A lab's event log (`STATE/LAB/events.jsonl`), which the supervisor appends
/// one JSON line to per QMP event. It outlives a boot: the lines of earlier
/// boots stay in it until `qlab rm`.
public enum EventLog {
    /// Where a read begins.
    public enum Start: Sendable, Equatable {
        /// Every line in the log, earlier boots' included.
        case all
        /// Only lines appended after the read began (a follow that starts at now).
        case now
        /// Lines whose event `time` (seconds since the epoch) is at or after this.
        case since(Double)
    }

    /// Calls `line` with each whole line of the log (without its newline),
    /// from `start`. With `follow`, goes on as the supervisor appends, until
    /// the lab has stopped (its record is gone) and every line is read, or
    /// `reader` (stdout) hangs up: a pipe whose reader has gone is noticed
    /// while waiting, not at the next write. The wait is an `inotify(7)`
    /// watch on the state dir (appends to the log) and the runtime dir (the
    /// record's removal), not a timer. Returns whether `reader` hung up.
    @discardableResult
    public static func read(
        _ runtime: LabRuntime, follow: Bool, from start: Start = .all, reader: FileDescriptor? = nil, line: ([UInt8]) -> Void
    ) async throws -> Bool {
        // Starting at now: past the last whole line there is (a partial one is the first
        // new one). Taken before the watches, so that whoever sees them (a test) knows
        // every line appended after is printed.
        var offset = start == .now ? wholeLinesLength(runtime.eventLogPath) : 0
        let watch: DirectoryWatch? = follow ? try DirectoryWatch() : nil
        // Watches before the first read: what happens after this is queued for the wait below.
        watch?.add(runtime.stateDirectory)
        watch?.add(runtime.directory)
        while true {
            let bytes = readFrom(runtime.eventLogPath, offset: offset)
            // Only whole lines: the supervisor may be mid-write.
            if let lastNewline = bytes.lastIndex(of: 0x0A) {
                for text in bytes[..<lastNewline].split(separator: 0x0A) where matches(text, start) { line(Array(text)) }
                offset += lastNewline + 1
            }
            guard let watch else { return false }
            if let reader, PollSet.hungUp(reader) { return true }
            // The supervisor removes the record once QEMU is gone: read it again.
            if (try? runtime.records.reload()) == nil && offset >= (FileSystem.size(runtime.eventLogPath) ?? 0) { return false }
            if !(await watch.wait(orHangUp: reader.map { [$0] } ?? [])) {
                try Task.checkCancellation()
                // No thread for the wait could be started: a plain retry.
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// Whether a log line is one `start` asks for: with `since`, its event's
    /// `time` is not earlier (a line without a time is kept: it cannot be placed).
    static func matches(_ text: ArraySlice<UInt8>, _ start: Start) -> Bool {
        guard case .since(let earliest) = start else { return true }
        guard let time = (try? JSONValue.parse(Array(text)))?["time"]?.doubleValue else { return true }
        return time >= earliest
    }

    /// The length of the log's whole lines (up to its last newline) now.
    static func wholeLinesLength(_ path: String) -> Int {
        let bytes = readFrom(path, offset: 0)
        return bytes.lastIndex(of: 0x0A).map { $0 + 1 } ?? 0
    }

    /// The file's bytes from `offset` to its end (at most 256 MiB); none when it cannot be read.
    static func readFrom(_ path: String, offset: Int) -> [UInt8] {
        guard let fd = try? FileDescriptor.open(path, .readOnly, options: [.closeOnExec, .noFollow]) else { return [] }
        defer { fd.closeIgnoringErrors() }
        guard (try? fd.seek(offset: Int64(offset), from: .start)) == Int64(offset) else { return [] }
        return fd.readAll(limit: 256 << 20) ?? []
    }
}
