import Platform

/// Waits for entries of a directory to appear or go: `inotify(7)` on the
/// directory (`IN_CREATE`, `IN_MOVED_TO`, `IN_DELETE`, `IN_MOVED_FROM`),
/// polled together with a child's pidfd, so the wait is an event, not a
/// sleep loop, and also ends when the child exits.
package enum EntryWatch {
    /// True once `directory/name` exists; false when the child `pid` exited,
    /// `timeout` passed or the task was cancelled first.
    package static func waitForEntry(_ name: String, in directory: String, orExitOf pid: Int32, timeout: Duration) async -> Bool {
        await waitUntil(in: directory, orExitOf: pid, timeout: timeout) { FileSystem.entryExists(directory + "/" + name) }
    }

    /// True once none of `names` is in `directory`; false as ``waitForEntry(_:in:orExitOf:timeout:)``.
    package static func waitForRemoval(_ names: [String], in directory: String, orExitOf pid: Int32, timeout: Duration) async -> Bool {
        await waitUntil(in: directory, orExitOf: pid, timeout: timeout) { !names.contains { FileSystem.entryExists(directory + "/" + $0) } }
    }

    /// Re-checks `condition` whenever an entry of `directory` is made, removed or renamed.
    static func waitUntil(in directory: String, orExitOf pid: Int32, timeout: Duration, _ condition: @escaping @Sendable () -> Bool) async -> Bool {
        guard let watch = try? DirectoryWatch(), watch.add(directory) else { return condition() }
        // Watched first, then looked: a change in between is not missed.
        if condition() { return true }
        let pidfd = ProcessDescriptor.open(pid)
        defer { if pidfd >= 0 { FileDescriptor(rawValue: pidfd).closeIgnoringErrors() } }
        // The child's exit (its pidfd readable) ends the wait too: the entry will not come now.
        return await watch.wait(until: condition, timeout: timeout, orReadable: pidfd >= 0 ? [FileDescriptor(rawValue: pidfd)] : [])
    }
}
