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

    /// Where labs keep guest RAM files for fast reverts: `$QLAB_RAM_DIR`,
    /// else a directory on the memory filesystem, `/dev/shm/qlab-UID`. With
    /// a runtime root other than the default one (QLAB_RUNTIME_DIR,
    /// XDG_RUNTIME_DIR) the name gets a hash of that root, so two roots never
    /// share a lab's RAM file (a lab name is unique only within its root).
    public static func ramRoot(environment: [String: String], uid: UInt32) -> String {
        if let dir = environment["QLAB_RAM_DIR"], !dir.isEmpty { return dir }
        let runtime = runtimeRoot(environment: environment, uid: uid)
        let standard = uid == 0 ? "/run/qlab" : "/tmp/qlab-\(uid)"
        let base = "/dev/shm/qlab-\(uid)"
        return runtime == standard ? base : base + "-" + fnv1a(runtime)
    }

    /// FNV-1a of `text`, 16 hex digits: a short stable name, not a secret.
    static func fnv1a(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        let digits = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
