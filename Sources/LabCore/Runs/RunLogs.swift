import Platform

/// A run's logs copied next to the reports, so they travel with them as CI
/// artifacts and the HTML report links them relatively: `NAME.console.log`
/// (what the guest printed during the run, qlab's framing left out) and
/// `NAME.qemu.log` (what QEMU wrote to its log during the run, when it wrote
/// anything). Each is capped to its last ``consoleLimit``/``qemuLimit`` bytes,
/// with a first line saying what was left out and where the whole log is.
enum RunLogs {
    /// The most of a run's console output copied (its end).
    static let consoleLimit = 1 << 20
    /// The most of QEMU's log of a run copied (its end).
    static let qemuLimit = 256 << 10

    /// Copies `progress`'s logs into `directory` as `name.console.log` and `name.qemu.log`
    /// and names them in `result` (written as every report file is: ``OutputFile``). A copy that
    /// fails is left out of the report; what went wrong is returned, for a note.
    static func copy(_ progress: EntryProgress, into directory: String, name: String, to result: inout TestResult) -> [String] {
        var problems: [String] = []
        if let log = progress.consoleLog {
            let size = ConsoleLog.size(log)
            let skipped = max(0, size - progress.logOffset - 4 * consoleLimit)
            var text = ConsoleLog.tail(log, bytes: consoleLimit, since: progress.logOffset)
            if skipped > 0 || text.utf8.count >= consoleLimit {
                text = "[qlab: the start of this run's console output is left out; the whole log: \(log)]\n" + text
            }
            let path = directory + "/" + name + ".console.log"
            do { try OutputFile.write(path, Array(text.utf8)); result.consoleLog = path } catch { problems.append("\(error)") }
        }
        let size = FileSystem.size(progress.qemuLog) ?? 0
        guard size > progress.qemuLogOffset else { return problems }
        let start = max(progress.qemuLogOffset, size - qemuLimit)
        var bytes = ConsoleLog.read(progress.qemuLog, from: start, limit: size - start) ?? []
        if start > progress.qemuLogOffset {
            bytes = Array("[qlab: the start of QEMU's log of this run is left out; the whole log: \(progress.qemuLog)]\n".utf8) + bytes
        }
        let path = directory + "/" + name + ".qemu.log"
        do { try OutputFile.write(path, bytes); result.qemuLog = path } catch { problems.append("\(error)") }
        return problems
    }
}
