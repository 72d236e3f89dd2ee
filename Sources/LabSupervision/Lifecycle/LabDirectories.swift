/// Where labs keep their runtime files (sockets, pid) and their state (overlays, logs).
public enum LabDirectories {
    /// `$QLAB_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/qlab`, else `/run/qlab` for
    /// root and `/tmp/qlab-UID` for others.
    public static func runtimeRoot(environment: [String: String], uid: UInt32) -> String {
        if let dir = environment["QLAB_RUNTIME_DIR"], !dir.isEmpty { return dir }
        if let dir = environment["XDG_RUNTIME_DIR"], !dir.isEmpty { return dir + "/qlab" }
        return uid == 0 ? "/run/qlab" : "/tmp/qlab-\(uid)"
    }

    /// `$QLAB_STATE_DIR`, else `$XDG_STATE_HOME/qlab`, else `~/.local/state/qlab`.
    public static func stateRoot(environment: [String: String]) -> String {
        if let dir = environment["QLAB_STATE_DIR"], !dir.isEmpty { return dir }
        if let dir = environment["XDG_STATE_HOME"], !dir.isEmpty { return dir + "/qlab" }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? "/root"
        return home + "/.local/state/qlab"
    }
}
