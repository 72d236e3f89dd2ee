import Platform
import QMP

/// An open directory that is this user's alone: a real directory (not a
/// link), owned by the effective user, mode 0700 (no group or other access,
/// and the owner may write). qlab keeps its runtime and state files only in
/// such directories and reaches every entry with `openat(2)`-family calls
/// from the directory's descriptor, never following a link (`O_NOFOLLOW`).
///
/// Since no other user can add, remove or rename anything in it (and every
/// directory above it was checked by ``DirectoryWalk``), a path below it that
/// QEMU is given (a socket, a log) names what qlab expects.
///
/// qlab never changes the mode of a directory it did not just create: one
/// that fails the checks is reported (``UnsafeDirectoryError``), not fixed.
public final class PrivateDirectory: Sendable {
    public let path: String
    public let role: DirectoryRole
    /// `O_RDONLY|O_DIRECTORY` descriptor, the base of every `*at` call here.
    let handle: FileDescriptor
    /// The raw number, for callers not on `FileDescriptor` yet (Revert's RAM image).
    var descriptor: Int32 { handle.rawValue }

    private init(path: String, role: DirectoryRole, descriptor: FileDescriptor) {
        self.path = path
        self.role = role
        self.handle = descriptor
    }

    deinit { handle.closeIgnoringErrors() }

    /// Opens the directory at `path` through ``DirectoryWalk`` (checking every
    /// directory and link above it) and checks it is private. With `create`,
    /// missing directories are made (`mkdirat(2)`; this one 0700); without, a
    /// missing one gives nil and nothing is made.
    public static func open(_ path: String, role: DirectoryRole, create: Bool) throws(UnsafeDirectoryError) -> PrivateDirectory? {
        guard let opened = try DirectoryWalk.open(path, role: role, create: create) else { return nil }
        defer { opened.descriptor.closeIgnoringErrors() }
        return try adopt(pathDescriptor: opened.descriptor, status: opened.status, created: opened.created, path: path, role: role)
    }

    /// The subdirectory `name` (one or more components separated by `/`),
    /// each private and none a link; made (0700) when missing and `create`.
    public func subdirectory(_ name: String, create: Bool) throws(UnsafeDirectoryError) -> PrivateDirectory? {
        var current = self
        for component in DirectoryWalk.components(name) {
            guard component != "." && component != ".." else {
                throw UnsafeDirectoryError(role: role, path: current.path(component), problem: .system(operation: "open", SystemErrno(.invalidArgument)))
            }
            guard let next = try current.child(component, create: create) else { return nil }
            current = next
        }
        return current
    }

    private func child(_ name: String, create: Bool) throws(UnsafeDirectoryError) -> PrivateDirectory? {
        let shown = path(name)
        var created = false
        while true {
            switch FileStatus.of(name, in: handle) {
            case .failure(let error) where error.code == Errno.noSuchFileOrDirectory.rawValue:
                guard create else { return nil }
                switch handle.makeDirectory(at: name, mode: 0o700) {
                case .success: created = true
                case .failure(.fileExists): break
                case .failure(let error):
                    throw UnsafeDirectoryError(role: role, path: shown, problem: .system(operation: "mkdir", SystemErrno(error)))
                }
                continue
            case .failure(let error):
                throw UnsafeDirectoryError(role: role, path: shown, problem: .system(operation: "stat", error))
            case .success(let status) where status.kind == .symbolicLink:
                throw UnsafeDirectoryError(role: role, path: shown, problem: .symbolicLink(status))
            case .success(let status) where status.kind != .directory:
                throw UnsafeDirectoryError(role: role, path: shown, problem: .notADirectory(status))
            case .success:
                let fd: FileDescriptor
                switch handle.openAt(name, .readOnly, options: [.pathOnly, .directory, .noFollow]) {
                case .success(let opened): fd = opened
                case .failure(let error): throw UnsafeDirectoryError(role: role, path: shown, problem: .system(operation: "open", SystemErrno(error)))
                }
                defer { fd.closeIgnoringErrors() }
                let status: FileStatus
                switch FileStatus.of(descriptor: fd) {
                case .success(let found): status = found
                case .failure(let error): throw UnsafeDirectoryError(role: role, path: shown, problem: .system(operation: "fstat", error))
                }
                return try Self.adopt(pathDescriptor: fd, status: status, created: created, path: shown, role: role)
            }
        }
    }

    /// Checks an `O_PATH` descriptor's directory and reopens it for reading.
    /// A directory made just now gets 0700 with `fchmod(2)` (the umask may have
    /// narrowed it); any other is judged as it is.
    private static func adopt(pathDescriptor: FileDescriptor, status: FileStatus, created: Bool, path: String, role: DirectoryRole) throws(UnsafeDirectoryError) -> PrivateDirectory {
        let reopened = pathDescriptor.openAt(".", .readOnly, options: .directory)
        let fd = try? reopened.get()
        var status = status
        if created, let fd, status.mode != 0o700, status.owner == ThisProcess.effectiveUserID, case .success = fd.setMode(0o700) {
            status.mode = 0o700
        }
        func refuse(_ problem: UnsafeDirectoryError.Problem) -> UnsafeDirectoryError {
            fd?.closeIgnoringErrors()
            return UnsafeDirectoryError(role: role, path: path, problem: problem)
        }
        guard status.kind == .directory else { throw refuse(.notADirectory(status)) }
        guard status.owner == ThisProcess.effectiveUserID else { throw refuse(.ownedByOther(status)) }
        guard status.mode & 0o077 == 0 else { throw refuse(.sharedMode(status)) }
        guard status.mode & 0o700 == 0o700 else { throw refuse(.notWritable(status)) }
        guard let fd else {
            if case .failure(let error) = reopened { throw refuse(.system(operation: "open", SystemErrno(error))) }
            throw refuse(.system(operation: "open", SystemErrno(.ioError)))
        }
        return PrivateDirectory(path: path, role: role, descriptor: fd)
    }

    /// The path of an entry, for messages and for programs given paths (QEMU).
    public func path(_ name: String) -> String { path + "/" + name }

    /// `fstatat(2)` with `AT_SYMLINK_NOFOLLOW`; nil when missing.
    public func status(_ name: String) -> FileStatus? {
        if case .success(let status) = FileStatus.of(name, in: handle) { return status }
        return nil
    }

    public func contains(_ name: String) -> Bool { status(name) != nil }

    /// The whole of a regular file of this user's, at most `limit` bytes:
    /// `openat(2)` with `O_NOFOLLOW|O_NONBLOCK` (a link or FIFO planted there
    /// is not followed or waited on), `fstat(2)`, `read(2)`. nil otherwise.
    public func read(_ name: String, limit: Int = 16 << 20) -> [UInt8]? {
        guard case .success(let fd) = handle.openAt(name, .readOnly, options: [.noFollow, .nonBlocking]) else { return nil }
        defer { fd.closeIgnoringErrors() }
        guard case .success(let status) = FileStatus.of(descriptor: fd), status.kind == .regular, status.owner == ThisProcess.effectiveUserID else { return nil }
        return fd.readAll(limit: limit)
    }

    public func readJSON(_ name: String) -> JSONValue? {
        read(name).flatMap { try? JSONValue.parse($0) }
    }

    /// Replaces `name` atomically: a new file under an unpredictable name
    /// (`openat(2)` with `O_CREAT|O_EXCL|O_NOFOLLOW`), `fsync(2)` unless not
    /// `durable`, `renameat(2)`. See ``FileSystem/writeAtomically(in:name:shownAs:_:mode:durable:)``.
    public func writeAtomically(_ name: String, _ bytes: [UInt8], mode: UInt32 = 0o600, durable: Bool = true) throws(SystemCallError) {
        try FileSystem.writeAtomically(in: handle.rawValue, name: name, shownAs: path(name), bytes, mode: mode, durable: durable)
    }

    public func writeJSON(_ name: String, _ value: JSONValue, durable: Bool = true) throws {
        var bytes = try value.serialized(pretty: true)
        bytes.append(0x0A)
        try writeAtomically(name, bytes, durable: durable)
    }

    /// Appends one line: `openat(2)` with `O_APPEND|O_CREAT|O_NOFOLLOW` (0600).
    public func appendLine(_ name: String, _ line: String) throws(SystemCallError) {
        let fd = FileDescriptor(rawValue: try openForAppending(name))
        defer { fd.closeIgnoringErrors() }
        // One write(2) for a whole line; a short one (a full disk) goes on from where it stopped.
        try fd.writeEvery(Array((line + "\n").utf8), what: path(name))
    }

    /// A descriptor appending to `name` (created 0600 when missing), e.g. a
    /// child's output: `openat(2)` with `O_WRONLY|O_APPEND|O_CREAT|O_NOFOLLOW|O_CLOEXEC`.
    /// The caller closes it.
    public func openForAppending(_ name: String) throws(SystemCallError) -> Int32 {
        switch handle.openAt(name, .writeOnly, options: [.create, .append, .noFollow], permissions: [.ownerReadWrite]) {
        case .success(let fd): return fd.rawValue
        case .failure(let error): throw SystemCallError("open \(path(name))", error)
        }
    }

    /// `unlinkat(2)`: the entry itself, never what a link names.
    public func remove(_ name: String) {
        handle.removeEntry(at: name)
    }

    /// `unlinkat(2)` with `AT_REMOVEDIR`: an empty subdirectory.
    public func removeDirectory(_ name: String) {
        handle.removeDirectory(at: name)
    }

    /// Removes `name` and, when it is a directory, everything below it:
    /// `unlinkat(2)` entry by entry from directory descriptors opened with
    /// `O_NOFOLLOW`, so a link is removed, never followed. Returns the bytes
    /// the regular files held.
    @discardableResult
    public func removeTree(_ name: String) -> Int { Self.removeTree(name, in: handle) }

    static func removeTree(_ name: String, in parent: FileDescriptor) -> Int {
        guard case .success(let status) = FileStatus.of(name, in: parent) else { return 0 }
        guard status.kind == .directory else {
            parent.removeEntry(at: name)
            return status.kind == .regular ? status.size : 0
        }
        guard case .success(let fd) = parent.openAt(name, .readOnly, options: [.directory, .noFollow]) else { return 0 }
        var freed = 0
        for entry in fd.entryNames() { freed += removeTree(entry, in: fd) }
        fd.closeIgnoringErrors()
        parent.removeDirectory(at: name)
        return freed
    }

    /// The names here, sorted, without `.` and `..`: `fdopendir(3)` on a `dup(2)`.
    public func names() -> [String] { handle.entryNames() }
}
