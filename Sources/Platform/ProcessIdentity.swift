/// Which process a pid names: pids get reused, so qlab records a process's
/// start time (field 22 of /proc/PID/stat, clock ticks since boot) when it
/// starts it, and signals a pid from a record only while that pid still has
/// the same start time.
public enum ProcessIdentity {
    /// The start time of `pid` (`/proc/PID/stat` field 22), or nil when it is gone.
    public static func startTime(_ pid: Int32, procfs: String = "/proc") -> UInt64? {
        guard pid > 0, let stat = HostFiles.readText(procfs + "/\(pid)/stat"),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after the parenthesised command name start with field 3 (state).
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// The parent of `pid` (`/proc/PID/stat` field 4), or nil when it is gone.
    public static func parent(_ pid: Int32, procfs: String = "/proc") -> Int32? {
        guard pid > 0, let stat = HostFiles.readText(procfs + "/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 1 ? Int32(fields[1]) : nil
    }

    /// True when `ancestor` is `pid` or one of its ancestors (parents followed to init).
    public static func descends(_ pid: Int32, from ancestor: Int32, procfs: String = "/proc") -> Bool {
        var current = pid
        // A bound on the walk: pid namespaces nest, they do not loop, but /proc is read as it changes.
        for _ in 0..<256 {
            if current == ancestor { return true }
            guard current > 1, let parent = parent(current, procfs: procfs) else { return false }
            current = parent
        }
        return false
    }

    /// True when `pid` runs (not a zombie) and started at `startTime`.
    public static func matches(_ pid: Int32, startTime: UInt64?, procfs: String = "/proc") -> Bool {
        guard let startTime, ProcessTable.isRunning(pid, procfs: procfs) else { return false }
        return self.startTime(pid, procfs: procfs) == startTime
    }
}
