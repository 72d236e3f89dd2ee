#if canImport(Glibc)
import Glibc
#endif

/// A pidfd: a descriptor for one child that becomes readable (`POLLIN`)
/// when it exits, so a wait is a `poll(2)` on a descriptor, not a sleep loop.
package enum ProcessDescriptor {
    private typealias PidfdOpen = @convention(c) (pid_t, UInt32) -> Int32

    /// glibc 2.36's `pidfd_open(2)` wrapper, looked up with `dlsym(3)`:
    /// Swift cannot call the variadic `syscall(2)`, and the Glibc module
    /// does not include <sys/pidfd.h>. nil on an older libc.
    private static let pidfdOpen: PidfdOpen? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "pidfd_open") else { return nil }
        return unsafeBitCast(symbol, to: PidfdOpen.self)
    }()

    /// `pidfd_open(pid, 0)` with `FD_CLOEXEC`; -1 when the kernel or libc
    /// has none (callers then fall back to a short `poll(2)` tick).
    package static func open(_ pid: pid_t) -> Int32 {
        guard let pidfdOpen else { return -1 }
        let fd = pidfdOpen(pid, 0)
        if fd >= 0 { FileDescriptor(rawValue: fd).setCloseOnExec(true) }
        return fd
    }
}
