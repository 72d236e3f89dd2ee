#if canImport(Glibc)
import Glibc
#endif
import Platform
import Synchronization

/// The owner's end of a lab started for one command (`qlab run`, `nested run`):
/// the write end of a pipe whose read end the lab's supervisor watches.
///
/// The lab lives while its owner holds this. When the owner closes it (or
/// dies in any way, SIGKILL and OOM included: the kernel closes its
/// descriptors), the supervisor reads EOF and takes QEMU down by itself,
/// removing the runtime files and the lock file. Labs started by `qlab up`
/// have no owner: they outlive the command by design.
public final class LabOwnership: Sendable {
    private let fd: Mutex<Int32>

    package init(writeEnd: Int32) {
        fd = Mutex(writeEnd)
    }

    /// Lets go of the lab (`close(2)` of the pipe's write end): a supervisor
    /// still running takes its QEMU down. Idempotent.
    public func release() {
        fd.withLock { fd in
            if fd >= 0 { close(fd) }
            fd = -1
        }
    }

    deinit { release() }

    /// A pipe for the owner (write end) and the supervisor (read end, handed
    /// to it by number), both close-on-exec. (A child spawned meanwhile does
    /// not inherit them either: ``ChildProcess/spawn`` closes what it does not keep.)
    package static func makePipe() throws(SystemCallError) -> (read: Int32, write: Int32) {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw SystemCallError("pipe") }
        _ = fcntl(ends[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(ends[1], F_SETFD, FD_CLOEXEC)
        return (ends[0], ends[1])
    }
}

/// The supervisor's end of the owner pipe.
struct OwnerWatch: Sendable {
    let fd: Int32

    /// True once every write end is closed (`poll(2)` says POLLHUP, or a read returns EOF).
    var ownerGone: Bool {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, 0) > 0 else { return false }
        if poller.revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 { return true }
        // The owner writes nothing; drain whatever it did and look for EOF.
        var byte: UInt8 = 0
        return read(fd, &byte, 1) == 0
    }
}
