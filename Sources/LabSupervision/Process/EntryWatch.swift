#if canImport(Glibc)
import Glibc
#endif
import Platform

/// Waits for entries of a directory to appear or go: `inotify(7)` on the
/// directory (`IN_CREATE`, `IN_MOVED_TO`, `IN_DELETE`, `IN_MOVED_FROM`),
/// polled together with a child's pidfd, so the wait is an event, not a
/// sleep loop, and also ends when the child exits.
package enum EntryWatch {
    static let inMovedFrom: UInt32 = 0x40
    static let inMovedTo: UInt32 = 0x80
    static let inCreate: UInt32 = 0x100
    static let inDelete: UInt32 = 0x200

    /// True once `directory/name` exists; false when the child `pid` exited,
    /// `timeout` passed or the task was cancelled first.
    package static func waitForEntry(_ name: String, in directory: String, orExitOf pid: pid_t, timeout: Duration) async -> Bool {
        await waitUntil(in: directory, orExitOf: pid, timeout: timeout) { FileSystem.entryExists(directory + "/" + name) }
    }

    /// True once none of `names` is in `directory`; false as ``waitForEntry(_:in:orExitOf:timeout:)``.
    package static func waitForRemoval(_ names: [String], in directory: String, orExitOf pid: pid_t, timeout: Duration) async -> Bool {
        await waitUntil(in: directory, orExitOf: pid, timeout: timeout) { !names.contains { FileSystem.entryExists(directory + "/" + $0) } }
    }

    /// Re-checks `condition` whenever an entry of `directory` is made, removed or renamed.
    static func waitUntil(in directory: String, orExitOf pid: pid_t, timeout: Duration, _ condition: @escaping @Sendable () -> Bool) async -> Bool {
        let watch = inotify_init1(Int32(O_CLOEXEC | O_NONBLOCK))
        guard watch >= 0 else { return condition() }
        defer { close(watch) }
        guard inotify_add_watch(watch, directory, inCreate | inMovedTo | inDelete | inMovedFrom) >= 0 else { return condition() }
        // Watched first, then looked: a change in between is not missed.
        if condition() { return true }
        let pidfd = ProcessDescriptor.open(pid)
        defer { if pidfd >= 0 { close(pidfd) } }
        let deadline = ContinuousClock.now + timeout
        let met = try? await OffPoolWait.run { cancelFD -> Bool in
            var fds = [
                pollfd(fd: watch, events: Int16(POLLIN), revents: 0), pollfd(fd: cancelFD, events: Int16(POLLIN), revents: 0),
                pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0),
            ]
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 8)
            defer { buffer.deallocate() }
            while ContinuousClock.now < deadline {
                let ready = poll(&fds, pidfd >= 0 ? 3 : 2, OffPoolWait.milliseconds(deadline - ContinuousClock.now))
                if ready < 0 && errno != EINTR { return false }
                if fds[1].revents != 0 { return false }
                if fds[0].revents != 0 {
                    while read(watch, buffer, 4096) > 0 {}
                    if condition() { return true }
                }
                if pidfd >= 0 && fds[2].revents != 0 { return condition() }
            }
            return false
        }
        return met ?? condition()
    }
}
