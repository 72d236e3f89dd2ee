extension DiagnosisCatalog {
    /// A QEMU whose guest RAM is a file (the fast revert method) and that
    /// died of SIGBUS: the line ``RAMFiles/sigbusNote(_:revert:)`` adds.
    static let ramFileRules: [DiagnosisRule] = [
        DiagnosisRule(
            id: "ram-file-full", keywords: ["sigbus", "file-backed"],
            patterns: [#"killed by SIGBUS while its guest RAM was file-backed \((?<path>[^;)]+)"#],
            takesDeviceFromLine: false,
            explain: { c in
                let file = c["path"] ?? "its RAM file"
                return (
                    summary: "QEMU died of SIGBUS: its guest RAM is the file \(file), and the filesystem holding it could not give it a page",
                    cause: "With `revert: fast` the guest's RAM is a file in the RAM directory (a tmpfs such as /dev/shm). When the guest touches a page the file has no block for and the filesystem is full (other labs' RAM files, other users of /dev/shm, or RAM images), the kernel sends QEMU SIGBUS. qlab allocates the live RAM file at `up`; a QEMU started by a fast revert maps a snapshot's image copy-on-write, whose holes still need room when the guest reads them.",
                    fix: "Free space on the RAM directory's filesystem (`df` it; `qlab list` shows labs holding RAM files), set QLAB_RAM_DIR to a filesystem with room for the guest's memory twice, or use `revert: loadvm` for this lab."
                )
            }),
    ]
}
