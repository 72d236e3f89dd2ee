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
            if fd >= 0 { FileDescriptor(rawValue: fd).closeIgnoringErrors() }
            fd = -1
        }
    }

    deinit { release() }

    /// A pipe for the owner (write end) and the supervisor (read end, handed
    /// to it by number), both close-on-exec. (A child spawned meanwhile does
    /// not inherit them either: ``ChildProcess/spawn`` closes what it does not keep.)
    package static func makePipe() throws(SystemCallError) -> (read: Int32, write: Int32) {
        let ends = try FileDescriptor.pipeCloseOnExec()
        return (ends.readEnd.rawValue, ends.writeEnd.rawValue)
    }
}

/// The supervisor's end of the owner pipe.
struct OwnerWatch: Sendable {
    let fd: Int32

    /// True once every write end is closed (`poll(2)` says POLLHUP, or a read returns EOF).
    var ownerGone: Bool {
        let descriptor = FileDescriptor(rawValue: fd)
        var poller = PollSet([(descriptor, .readable)])
        guard case .success(let ready) = poller.waitOnce(milliseconds: 0), ready > 0 else { return false }
        if !poller.returned(0).isDisjoint(with: [.hangUp, .error, .invalid]) { return true }
        // The owner writes nothing; drain whatever it did and look for EOF.
        var byte: UInt8 = 0
        return withUnsafeMutableBytes(of: &byte) { descriptor.readSome(into: $0) } == .success(0)
    }
}
