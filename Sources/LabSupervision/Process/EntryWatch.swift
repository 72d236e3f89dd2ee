#if canImport(Glibc)
import Glibc
#endif

/// Waits for a name to appear in a directory: `inotify(7)` (`IN_CREATE`,
/// `IN_MOVED_TO`) on the directory, polled together with a child's pidfd,
/// so the wait is an event, not a sleep loop, and ends when the child exits.
package enum EntryWatch {
    static let inCreate: UInt32 = 0x100
    static let inMovedTo: UInt32 = 0x80

    /// True once `directory/name` exists; false when the child `pid` exited,
    /// `timeout` passed or the task was cancelled first.
    package static func waitForEntry(_ name: String, in directory: String, orExitOf pid: pid_t, timeout: Duration) async -> Bool {
        let path = directory + "/" + name
        let watch = inotify_init1(Int32(O_CLOEXEC | O_NONBLOCK))
        guard watch >= 0 else { return FileSystem.entryExists(path) }
        defer { close(watch) }
        guard inotify_add_watch(watch, directory, inCreate | inMovedTo) >= 0 else { return FileSystem.entryExists(path) }
        // Watched first, then looked: an entry made in between is not missed.
        if FileSystem.entryExists(path) { return true }
        let pidfd = ProcessDescriptor.open(pid)
        defer { if pidfd >= 0 { close(pidfd) } }
        let deadline = ContinuousClock.now + timeout
        let found = try? await OffPoolWait.run { cancelFD -> Bool in
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
                    if FileSystem.entryExists(path) { return true }
                }
                if pidfd >= 0 && fds[2].revents != 0 { return false }
            }
            return false
        }
        return found ?? FileSystem.entryExists(path)
    }
}
