#if canImport(Glibc)
import Glibc
#endif

/// `inotify(7)` watches on directories: ``wait(timeout:)`` returns when an
/// entry in one of them is created, written, renamed into place or removed,
/// or the directory itself goes, so a wait for a file another process
/// writes is an event, not a sleep loop. Events that come between a check
/// and the wait are queued by the kernel, so none is missed.
public final class DirectoryWatch: Sendable {
    private let fd: Int32

    /// `inotify_init1(IN_CLOEXEC | IN_NONBLOCK)`.
    public init() throws(SystemCallError) {
        fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard fd >= 0 else { throw SystemCallError("inotify_init1") }
    }

    /// `inotify_add_watch(2)` on `directory` (not following a link at its
    /// last component); false when it cannot be watched (missing, not a directory).
    @discardableResult
    public func add(_ directory: String) -> Bool {
        let mask = IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
        return inotify_add_watch(fd, directory, UInt32(mask) | UInt32(IN_ONLYDIR) | UInt32(IN_DONT_FOLLOW)) >= 0
    }

    /// Waits until an event arrives or one of `others` becomes readable or
    /// hangs up, or one of `hangUps` hangs up or fails (true), `timeout`
    /// passes or the task is cancelled (false): `poll(2)` on the inotify
    /// descriptor (and `others`: a child's pidfd, an owner pipe; `hangUps`,
    /// polled for no event, so only `POLLHUP`/`POLLERR` wake: stdout, whose
    /// reader may go) on a detached thread, off the cooperative pool. Queued
    /// events are read and dropped: the caller looks at the files again.
    /// The caller keeps `others` and `hangUps` open until this returns.
    public func wait(timeout: Duration? = nil, orReadable others: [FileDescriptor] = [], orHangUp hangUps: [FileDescriptor] = []) async -> Bool {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        // The thread holds the watch, so its descriptor stays open while polled.
        let woken = try? await OffPoolWait.run { [self] cancelFD -> Bool in
            var fds = PollSet([(FileDescriptor(rawValue: cancelFD), .readable), (FileDescriptor(rawValue: fd), .readable)]
                + others.map { ($0, .readable) } + hangUps.map { ($0, []) })
            let ready = fds.wait(until: deadline)
            return (try? ready.get()).map { $0 > 0 } == true && fds.returned(0).isEmpty
        }
        drain()
        return woken ?? false
    }

    /// Waits until `condition` holds (true): it is checked now and after
    /// every event, on one detached thread for the whole wait (off the
    /// cooperative pool). False when one of `others` becomes readable or
    /// hangs up first (a child's pidfd: it exited) and `condition` still does
    /// not hold, when `timeout` passes or the task is cancelled. The caller
    /// keeps `others` open until this returns.
    public func wait(
        until condition: @escaping @Sendable () -> Bool, timeout: Duration?, orReadable others: [FileDescriptor] = []
    ) async -> Bool {
        if condition() { return true }
        let deadline = timeout.map { ContinuousClock.now + $0 }
        let met = try? await OffPoolWait.run { [self] cancelFD -> Bool in
            var fds = PollSet([(FileDescriptor(rawValue: cancelFD), .readable), (FileDescriptor(rawValue: fd), .readable)] + others.map { ($0, .readable) })
            while true {
                guard case .success(let ready) = fds.wait(until: deadline), ready > 0 else { return condition() }
                if !fds.returned(0).isEmpty { return false }
                if !fds.returned(1).isEmpty {
                    drain()
                    if condition() { return true }
                }
                if others.indices.contains(where: { !fds.returned($0 + 2).isEmpty }) { return condition() }
            }
        }
        return met ?? condition()
    }

    /// Reads every queued event (`read(2)` until `EAGAIN`).
    private func drain() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while buffer.withUnsafeMutableBytes({ read(fd, $0.baseAddress, $0.count) }) > 0 {}
    }

    deinit {
        close(fd)
    }
}
