#if canImport(Glibc)
import Glibc
#endif
import Platform
import QMP
import Synchronization

/// Probing a QEMU binary, cached per binary.
extension QEMUCapabilities {
    /// The capabilities `lab` needs of `qemu`, probed once per binary (cache
    /// key: the resolved path, size and mtime, so a replaced binary is asked
    /// again): kept in this process and, when given, in `cache`'s
    /// `qemu-capabilities.json` (the state root: `qlab args` and `up` share
    /// it). Only what a lab uses is asked: `rombar` only when a device sets
    /// it (`-device vfio-pci,help` costs about 40 ms), the second `dc390`
    /// plug only when a device hotplugs a `dc390` (a throw-away QEMU, ~0.1 s).
    public static func probe(
        for lab: Lab, environment: [String: String] = currentEnvironment(), cache directory: PrivateDirectory? = nil
    ) -> QEMUCapabilities {
        let needed = Needed(lab)
        guard needed.rombar || needed.secondDC390Plug else { return QEMUCapabilities() }
        guard let binary = BinaryIdentity(lab.qemu, environment: environment) else {
            return QEMUCapabilities().asking(needed, qemu: lab.qemu, fresh: true)
        }
        if let known = cache.withLock({ $0[binary] }), !known.lacks(needed) { return known }
        var stored = directory.flatMap { $0.readJSON(cacheFile) }.flatMap { try? JSONValueDecoder().decode(CacheFile.self, from: $0) }
            ?? CacheFile(binaries: [])
        let cached = stored.binaries.first(where: { $0.binary == binary })?.capabilities ?? cache.withLock({ $0[binary] })
        if let cached, !cached.lacks(needed) {
            cache.withLock { $0[binary] = cached }
            return cached
        }
        let probed = (cached ?? QEMUCapabilities()).asking(needed, qemu: binary.path, fresh: cached == nil)
        cache.withLock { $0[binary] = probed }
        if let directory {
            stored.binaries = stored.binaries.filter { $0.binary.path != binary.path } + [CacheFile.Entry(binary: binary, capabilities: probed)]
            if let json = try? JSONValueEncoder().encode(stored) { try? directory.writeJSON(cacheFile, json) }
        }
        return probed
    }

    /// Which questions a lab needs answered.
    struct Needed {
        var rombar: Bool
        var secondDC390Plug: Bool

        init(_ lab: Lab) {
            rombar = lab.devices.contains { $0.passthrough?.rombar != nil }
            secondDC390Plug = lab.devices.contains { $0.emulated?.driver == "dc390" && $0.attach == .hotplug }
        }
    }

    /// Whether an answer `needed` is missing (asked before by a lab that did not need it).
    /// The rombar spelling has no "not asked" value: every entry asks it first (``asking(_:qemu:fresh:)``).
    func lacks(_ needed: Needed) -> Bool {
        needed.secondDC390Plug && secondDC390Plug == .notAsked
    }

    /// These capabilities with the `needed` questions asked of `qemu`; a
    /// `fresh` entry (none cached) always asks the rombar spelling, so a cached
    /// entry's spelling is always a real answer.
    func asking(_ needed: Needed, qemu: String, fresh: Bool) -> QEMUCapabilities {
        var answered = self
        if needed.rombar || fresh { answered.rombar = RombarSpelling.probe(qemu: qemu) }
        if needed.secondDC390Plug, answered.secondDC390Plug == .notAsked { answered.secondDC390Plug = SecondDC390Plug.probe(qemu: qemu) }
        return answered
    }

    static let cacheFile = "qemu-capabilities.json"
    private static let cache = Mutex<[BinaryIdentity: QEMUCapabilities]>([:])

    /// `qemu-capabilities.json`: one entry per binary path, replaced when the binary changes.
    struct CacheFile: Codable {
        struct Entry: Codable {
            var binary: BinaryIdentity
            var capabilities: QEMUCapabilities
        }
        var binaries: [Entry]
    }

    /// An executable as found (a path, or the first match on PATH) with its size and mtime (`stat(2)`).
    struct BinaryIdentity: Hashable, Sendable, Codable {
        enum CodingKeys: String, CodingKey {
            case path, size
            case modified = "mtime"
            case modifiedNanoseconds = "mtime_nsec"
        }

        var path: String
        var size: Int64
        var modified: Int64
        var modifiedNanoseconds: Int64

        init?(_ executable: String, environment: [String: String]) {
            let candidates = executable.contains("/")
                ? [executable]
                : (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map { String($0) + "/" + executable }
            for candidate in candidates {
                var info = stat()
                guard stat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 else { continue }
                self.path = candidate
                self.size = Int64(info.st_size)
                self.modified = Int64(info.st_mtim.tv_sec)
                self.modifiedNanoseconds = Int64(info.st_mtim.tv_nsec)
                return
            }
            return nil
        }
    }
}
