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

    /// Where a run's (or a boot's) part of the logs begins.
    struct Start {
        /// The lab's console log (nil: no log) and its size when the run began.
        var consoleLog: String?
        var consoleOffset: Int
        /// QEMU's log (RUNTIME/LAB/qemu.log) and its size when the run began.
        var qemuLog: String
        var qemuOffset: Int
    }

    /// Copies the logs from `start` on into `directory` as `name.console.log` and `name.qemu.log`
    /// and returns their paths (written as every report file is: ``OutputFile``). A copy that
    /// fails is left out (nil); what went wrong is in `problems`, for a note.
    static func copy(from start: Start, into directory: String, name: String) -> (console: String?, qemu: String?, problems: [String]) {
        var problems: [String] = []
        var copied: (console: String?, qemu: String?) = (nil, nil)
        if let log = start.consoleLog {
            let size = ConsoleLog.size(log)
            let skipped = max(0, size - start.consoleOffset - 4 * consoleLimit)
            var text = ConsoleLog.tail(log, bytes: consoleLimit, since: start.consoleOffset)
            if skipped > 0 || text.utf8.count >= consoleLimit {
                text = "[qlab: the start of this run's console output is left out; the whole log: \(log)]\n" + text
            }
            let path = directory + "/" + name + ".console.log"
            do { try OutputFile.write(path, Array(text.utf8)); copied.console = path } catch { problems.append("\(error)") }
        }
        let size = FileSystem.size(start.qemuLog) ?? 0
        guard size > start.qemuOffset else { return (copied.console, nil, problems) }
        let from = max(start.qemuOffset, size - qemuLimit)
        var bytes = ConsoleLog.read(start.qemuLog, from: from, limit: size - from) ?? []
        if from > start.qemuOffset {
            bytes = Array("[qlab: the start of QEMU's log of this run is left out; the whole log: \(start.qemuLog)]\n".utf8) + bytes
        }
        let path = directory + "/" + name + ".qemu.log"
        do { try OutputFile.write(path, bytes); copied.qemu = path } catch { problems.append("\(error)") }
        return (copied.console, copied.qemu, problems)
    }
}
