import Platform

/// Which of qlab's directory trees a path belongs to: the words used in
/// errors and the setting that moves it.
public struct DirectoryRole: Sendable, Hashable {
    /// "runtime directory", "state directory".
    public var name: String
    /// The environment variable that chooses another place.
    public var setting: String

    public static let runtime = DirectoryRole(name: "runtime directory", setting: "QLAB_RUNTIME_DIR")
    public static let state = DirectoryRole(name: "state directory", setting: "QLAB_STATE_DIR")
    public static let ram = DirectoryRole(name: "RAM directory", setting: "QLAB_RAM_DIR")
    public static let cards = DirectoryRole(name: "card reservation directory", setting: "QLAB_CARDS_DIR")
}

/// A directory qlab refuses to use, or a path it refuses to follow, because
/// another user could read, write, replace or redirect it (or because its
/// owner may not write in it). Says the path, its owner and mode, and what to
/// do, as tmux and ssh-agent do. qlab changes nothing when it throws this.
public struct UnsafeDirectoryError: Error, Sendable, CustomStringConvertible {
    public enum Problem: Sendable {
        /// The directory itself belongs to another user.
        case ownedByOther(FileStatus)
        /// Group or others have some access to it.
        case sharedMode(FileStatus)
        /// Its owner (the caller) may not read, write or enter it (mode lacks `rwx` for the owner).
        case notWritable(FileStatus)
        /// A symbolic link where qlab keeps its own entries.
        case symbolicLink(FileStatus)
        /// Neither a directory nor a link to one.
        case notADirectory(FileStatus)
        /// A directory on the way that another user owns or may write in (not sticky).
        case unsafeAncestor(FileStatus)
        /// A symbolic link on the way that another user owns (and so may point elsewhere).
        case foreignLink(FileStatus)
        /// A call failed: `mkdirat`, `openat`, `readlinkat`...
        case system(operation: String, SystemErrno)
    }

    public var role: DirectoryRole
    public var path: String
    public var problem: Problem

    public init(role: DirectoryRole, path: String, problem: Problem) {
        self.role = role
        self.path = path
        self.problem = problem
    }

    /// The message, naming the path, its owner and mode and what to do.
    public var description: String {
        let me = FileStatus.describe(user: ThisProcess.effectiveUserID)
        let move = "set \(role.setting) to a directory of yours with mode 0700, or to a path that does not exist yet (qlab creates it)"
        let alone = "qlab keeps sockets, records and logs only in a directory of yours alone (mode 0700)"
        let keep = "qlab does not change the mode of a directory it did not create"
        switch problem {
        case .ownedByOther(let st):
            return "\(role.name) \(path) is owned by \(st.ownerText) (mode \(st.modeText)), not by you (\(me)); \(alone). Nothing was changed: \(move)."
        case .sharedMode(let st):
            return "\(role.name) \(path) (owner \(st.ownerText)) has mode \(st.modeText), so other users can use it; \(alone). \(keep): if it is yours alone, `chmod 700 \(path)`; else \(move)."
        case .notWritable(let st):
            return "\(role.name) \(path) (owner \(st.ownerText)) has mode \(st.modeText): its owner may not write in it. \(keep): `chmod 700 \(path)`, or \(move)."
        case .symbolicLink(let st):
            return "\(role.name) entry \(path) is a symbolic link (owner \(st.ownerText)); qlab never follows a link it did not make there and changed nothing. Remove it (`rm \(path)`), or \(move)."
        case .notADirectory(let st):
            return "\(role.name) \(path) is not a directory (owner \(st.ownerText), mode \(st.modeText)); remove it, or \(move)."
        case .unsafeAncestor(let st):
            let why = st.ownedByRootOrCaller ? "other users may write in it (mode \(st.modeText), not sticky)" : "it is owned by \(st.ownerText) (mode \(st.modeText))"
            return "\(role.name): \(path) is on its path and \(why), so another user could replace what qlab keeps below it. \(move.prefix(1).uppercased() + move.dropFirst()), under directories only you or root may change (a sticky one such as /tmp is fine)."
        case .foreignLink(let st):
            return "\(role.name): \(path) on its path is a symbolic link owned by \(st.ownerText), who could point it elsewhere. \(move.prefix(1).uppercased() + move.dropFirst())."
        case .system(let operation, let error):
            return "\(role.name) \(path): \(operation): \(error); \(move)."
        }
    }
}
