import Platform
import QMP

/// A command's claim on a lab's serial console: an exclusive `flock(2)` on
/// `RUNTIME/LAB/console.lock` (0600, opened with `O_NOFOLLOW` in the lab's runtime dir), with
/// the holder written into it. QEMU serves one console client at a time and leaves a second
/// one connected but unserved, so a command that is about to use the console claims it
/// first, and one that finds it claimed is refused as busy (``LabError/consoleBusy(lab:holder:)``,
/// exit 4) naming the holder, rather than probing a console that cannot answer it. The kernel
/// drops the claim when its descriptor closes: when the claim is released (deinit), or at the holder's exit, SIGKILL included.
public final class ConsoleClaim: Sendable {
    static let fileName = "console.lock"
    private let fd: FileDescriptor

    private init(fd: FileDescriptor) {
        self.fd = fd
    }

    /// Claims lab `runtime`'s console for `holder` (this process; nil: unnamed), or throws
    /// ``LabError/consoleBusy(lab:holder:)`` naming who has it.
    public static func take(_ runtime: LabRuntime, holder: LabOwner? = LabOwner.thisProcess()) throws -> ConsoleClaim {
        guard let directory = try runtime.runtimeDirectory(create: false) else { throw LabError.notRunning(runtime.name) }
        let fd: FileDescriptor
        switch directory.handle.openAt(fileName, .readWrite, options: [.create, .noFollow], permissions: [.ownerReadWrite]) {
        case .success(let opened): fd = opened
        case .failure(let error): throw SystemCallError("open \(directory.path(fileName))", error)
        }
        switch fd.tryLockExclusive() {
        case .success:
            if let holder, var bytes = try? JSONValueEncoder().encode(holder).serialized(pretty: false) {
                bytes.append(UInt8(ascii: "\n"))
                _ = fd.truncate(toSize: 0)
                _ = fd.writeEvery(bytes, atOffset: 0)
            }
            return ConsoleClaim(fd: fd)
        case .failure(let error):
            fd.closeIgnoringErrors()
            guard error.isWouldBlock || error == .interrupted else { throw SystemCallError("flock \(directory.path(fileName))", error) }
            // The holder writes itself in just after taking the lock: a moment without a record is "another command".
            let recorded = directory.read(fileName, limit: 4096).flatMap { try? JSONValue.parse($0) }.flatMap { try? JSONValueDecoder().decode(LabOwner.self, from: $0) }
            throw LabError.consoleBusy(lab: runtime.name, holder: recorded?.description ?? "another qlab command")
        }
    }

    /// Gives the console up: closing the lock's descriptor drops the lock.
    deinit {
        fd.closeIgnoringErrors()
    }
}
