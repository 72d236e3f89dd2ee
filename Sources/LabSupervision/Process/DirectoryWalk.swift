import Platform

/// Opens a directory by path one component at a time, each with `openat(2)`
/// and `O_NOFOLLOW` from the previous component's descriptor, so that no
/// step is taken on another user's word:
///
/// - every directory passed through must be owned by root or this user, and
///   not writable by group or others unless sticky (like /tmp, where others
///   may not rename or remove what is ours);
/// - a symbolic link passed through is followed (`readlinkat(2)`) only when
///   root or this user owns it: anyone else could point it elsewhere later.
///
/// This is OpenSSH's `safe_path` rule, applied while walking rather than on a
/// resolved path, so a link on the way is judged too.
enum DirectoryWalk {
    struct Opened {
        /// `O_PATH|O_DIRECTORY` descriptor of the last directory.
        var descriptor: FileDescriptor
        var status: FileStatus
        /// The last component was made here by `mkdirat(2)`.
        var created: Bool
    }

    /// Opens `path` (relative paths against the working directory). A missing
    /// component is made with `mkdirat(2)` when `create` (0755 on the way,
    /// `finalMode` for the last; the umask applies), else the answer is nil.
    /// The last directory itself is not judged here: the caller decides what it needs.
    static func open(_ path: String, role: DirectoryRole, create: Bool, finalMode: UInt32 = 0o700) throws(UnsafeDirectoryError) -> Opened? {
        let absolute = path.hasPrefix("/") ? path : Paths.currentDirectory() + "/" + path
        var pending = components(absolute)
        var fd: FileDescriptor
        switch FileDescriptor.openDirectoryPath("/") {
        case .success(let root): fd = root
        case .failure(let error): throw UnsafeDirectoryError(role: role, path: "/", problem: .system(operation: "open", SystemErrno(error)))
        }
        var shown = ""
        var links = 0
        var createdLast = false
        func fail(_ at: String, _ problem: UnsafeDirectoryError.Problem) -> UnsafeDirectoryError {
            fd.closeIgnoringErrors()
            return UnsafeDirectoryError(role: role, path: at.isEmpty ? "/" : at, problem: problem)
        }
        while !pending.isEmpty {
            let name = pending.removeFirst()
            if name == "." { continue }
            let isLast = pending.isEmpty
            let here = shown + "/" + name
            let examined = FileStatus.of(name, in: fd)
            if case .failure(let error) = examined, error.code == Errno.noSuchFileOrDirectory.rawValue {
                guard create else {
                    fd.closeIgnoringErrors()
                    return nil
                }
                switch fd.makeDirectory(at: name, mode: isLast ? finalMode : 0o755) {
                case .success: createdLast = isLast
                case .failure(.fileExists): break
                case .failure(let error): throw fail(here, .system(operation: "mkdir", SystemErrno(error)))
                }
                pending.insert(name, at: 0)  // examine what is there now
                continue
            }
            let status: FileStatus
            switch examined {
            case .success(let found): status = found
            case .failure(let error): throw fail(here, .system(operation: "stat", error))
            }
            switch status.kind {
            case .symbolicLink:
                guard status.ownedByRootOrCaller else { throw fail(here, .foreignLink(status)) }
                links += 1
                guard links <= 40, let target = fd.readLink(at: name) else {
                    throw fail(here, .system(operation: "readlink", SystemErrno(links > 40 ? .tooManySymbolicLinkLevels : .current)))
                }
                if target.hasPrefix("/") {
                    fd.closeIgnoringErrors()
                    switch FileDescriptor.openDirectoryPath("/") {
                    case .success(let root): fd = root
                    case .failure(let error): throw UnsafeDirectoryError(role: role, path: "/", problem: .system(operation: "open", SystemErrno(error)))
                    }
                    shown = ""
                }
                pending = components(target) + pending
            case .directory:
                let next: FileDescriptor
                switch fd.openAt(name, .readOnly, options: [.pathOnly, .directory, .noFollow]) {
                case .success(let opened): next = opened
                case .failure(let error): throw fail(here, .system(operation: "open", SystemErrno(error)))
                }
                fd.closeIgnoringErrors()
                fd = next
                shown = name == ".." ? Paths.directory(of: shown.isEmpty ? "/" : shown) : here
                if shown == "/" { shown = "" }
                let opened: FileStatus
                switch FileStatus.of(descriptor: fd) {
                case .success(let found): opened = found
                case .failure(let error): throw fail(here, .system(operation: "fstat", error))
                }
                if isLast { return Opened(descriptor: fd, status: opened, created: createdLast) }
                if !opened.ownedByRootOrCaller || (opened.writableByOthers && !opened.sticky) {
                    throw fail(shown, .unsafeAncestor(opened))
                }
            default:
                throw fail(here, .notADirectory(status))
            }
        }
        // The path was "/" (or folded to it).
        let opened: FileStatus
        switch FileStatus.of(descriptor: fd) {
        case .success(let found): opened = found
        case .failure(let error): throw fail("/", .system(operation: "fstat", error))
        }
        return Opened(descriptor: fd, status: opened, created: false)
    }

    static func components(_ path: String) -> [String] {
        path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
    }
}
