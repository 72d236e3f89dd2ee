/// The command language a guest's serial console speaks, which decides how
/// qlab frames a command there (``ConsoleCommandFraming``).
public enum ConsoleShell: String, Sendable, CaseIterable {
    /// A POSIX shell (sh, ash, dash, ksh, bash): Linux and the BSDs, Mac OS X.
    case posix
    /// GRUB's shell in normal mode (GRUB's script language: `eval`, `$?`).
    case grub

    /// A command that does nothing and succeeds: how a probe asks whether the console answers.
    var probeCommand: String {
        switch self {
        case .posix: return ":"
        case .grub: return "true"
        }
    }
}
