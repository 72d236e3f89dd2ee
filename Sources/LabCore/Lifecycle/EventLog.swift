import Platform

/// A lab's event log (`STATE/LAB/events.jsonl`), which the supervisor appends
/// one JSON line to per QMP event.
public enum EventLog {
    /// Calls `line` with each whole line of the log (without its newline).
    /// With `follow`, goes on as the supervisor appends, until the lab has
    /// stopped (its record is gone) and every line is read. The wait is an
    /// `inotify(7)` watch on the state dir (appends to the log) and the
    /// runtime dir (the record's removal), not a timer.
    public static func read(_ runtime: LabRuntime, follow: Bool, line: ([UInt8]) -> Void) async throws {
        let watch: DirectoryWatch? = follow ? try DirectoryWatch() : nil
        // Watches first: what happens after this is queued for the wait below.
        watch?.add(runtime.stateDirectory)
        watch?.add(runtime.directory)
        var offset = 0
        while true {
            let bytes = readFrom(runtime.eventLogPath, offset: offset)
            // Only whole lines: the supervisor may be mid-write.
            if let lastNewline = bytes.lastIndex(of: 0x0A) {
                for text in bytes[..<lastNewline].split(separator: 0x0A) { line(Array(text)) }
                offset += lastNewline + 1
            }
            guard let watch else { return }
            // The supervisor removes the record once QEMU is gone: read it again.
            if (try? runtime.records.reload()) == nil && offset >= (FileSystem.size(runtime.eventLogPath) ?? 0) { return }
            if !(await watch.wait()) {
                try Task.checkCancellation()
                // No thread for the wait could be started: a plain retry.
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// The file's bytes from `offset` to its end (at most 256 MiB); none when it cannot be read.
    static func readFrom(_ path: String, offset: Int) -> [UInt8] {
        guard let fd = try? FileDescriptor.open(path, .readOnly, options: [.closeOnExec, .noFollow]) else { return [] }
        defer { fd.closeIgnoringErrors() }
        guard (try? fd.seek(offset: Int64(offset), from: .start)) == Int64(offset) else { return [] }
        return fd.readAll(limit: 256 << 20) ?? []
    }
}
