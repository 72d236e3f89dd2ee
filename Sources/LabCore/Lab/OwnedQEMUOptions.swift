/// QEMU options that qlab itself gives and relies on to track QEMU: a lab's
/// `qemu_args` must not repeat or override them. `-daemonize` would detach
/// QEMU from its supervisor, a second `-pidfile` or `-name` would hide it from
/// `status` and `down`, another monitor could quit or reconfigure it behind
/// qlab's back, and a chardev or device reusing a `qlab-` id collides with
/// qlab's own.
enum OwnedQEMUOptions {
    /// Options refused outright, with why.
    static let refused: [String: String] = [
        "daemonize": "QEMU would detach from its supervisor, and `status` and `down` would lose it",
        "pidfile": "qlab writes QEMU's pid file itself",
        "name": "qlab names the QEMU process after the lab (`-name LAB,process=qlab-LAB`)",
        "qmp": "qlab gives QEMU its QMP monitors; talk to the lab with `qlab qmp LAB ...`",
        "qmp-pretty": "qlab gives QEMU its QMP monitors; talk to the lab with `qlab qmp LAB ...`",
        "monitor": "a second monitor could quit or change QEMU behind qlab's back; use `qlab qmp LAB ...`",
        "mon": "a second monitor could quit or change QEMU behind qlab's back; use `qlab qmp LAB ...`",
        "runas": "QEMU would run as another user, who could then signal or hide it",
        "chroot": "QEMU could no longer reach the sockets qlab gives it",
        "readconfig": "a config file can carry options qlab owns (monitors, -daemonize); put its options in qemu_args",
    ]

    /// Options whose value is a character device backend that may carry a
    /// monitor (`mon:...`) or name one of qlab's chardevs (`chardev:qlab-...`).
    static let backendOptions: Set<String> = ["serial", "parallel", "virtioconsole", "debugcon"]

    /// The prefix of every id qlab gives (``QEMUCommandLine/IDs``).
    static let reservedIDPrefix = "qlab-"

    /// Why `words[index]` (with the word after it as its value) may not be
    /// in `qemu_args`, or nil when it may.
    static func refusal(_ words: [String], at index: Int) -> String? {
        let word = words[index]
        if let clash = reservedID(in: word) {
            return "'\(clash)' is one of qlab's own ids (qlab-*); give your chardevs, devices and nodes other ids"
        }
        guard word.hasPrefix("-"), word.count > 1 else { return nil }
        var name = Substring(word.dropFirst())
        if name.hasPrefix("-") { name = name.dropFirst() }  // QEMU reads --opt as -opt
        var value: String? = index + 1 < words.count ? words[index + 1] : nil
        if let equals = name.firstIndex(of: "=") {
            value = String(name[name.index(after: equals)...])
            name = name[..<equals]
        }
        if let why = refused[String(name)] { return "-\(name) is qlab's to give: \(why)" }
        if backendOptions.contains(String(name)), let value {
            if value.hasPrefix("chardev:" + reservedIDPrefix) {
                return "-\(name) \(value) uses one of qlab's chardevs; give your own -chardev with another id"
            }
            if value.hasPrefix("mon:"), let host = networkHost(String(value.dropFirst(4))), !isLoopback(host) {
                return "-\(name) \(value) puts a monitor on the network (\(host.isEmpty ? "every interface" : host)), where anyone who reaches it controls QEMU; bind it to 127.0.0.1 or a Unix socket"
            }
        }
        return nil
    }

    /// An `id=`, `node-name=` or `chardev=` value starting with `qlab-`.
    static func reservedID(in word: String) -> String? {
        for part in word.split(separator: ",") {
            for key in ["id=", "node-name=", "chardev=", "netdev=", "drive="] where part.hasPrefix(key) {
                let id = part.dropFirst(key.count)
                if id.hasPrefix(reservedIDPrefix) { return String(id) }
            }
        }
        return nil
    }

    /// The host of a `tcp:HOST:PORT`, `telnet:HOST:PORT` or `websocket:HOST:PORT`
    /// backend ("" for every interface); nil when the backend is not TCP.
    static func networkHost(_ backend: String) -> String? {
        for scheme in ["tcp:", "telnet:", "websocket:", "udp:"] where backend.hasPrefix(scheme) {
            let address = backend.dropFirst(scheme.count).split(separator: ",", omittingEmptySubsequences: false).first ?? ""
            guard let colon = address.lastIndex(of: ":") else { return String(address) }
            return String(address[..<colon]).trimmingCharacters(in: "[]")
        }
        return nil
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}
