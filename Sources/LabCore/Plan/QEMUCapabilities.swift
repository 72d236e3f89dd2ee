#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// What qlab asked the QEMU binary it runs, where the answer changes the
/// command line: asked of the binary itself, not inferred from its version.
public struct QEMUCapabilities: Sendable, Hashable, Codable {
    /// How this QEMU spells vfio-pci's `rombar`.
    public var rombar: RombarSpelling

    public init(rombar: RombarSpelling = .number) {
        self.rombar = rombar
    }

    /// The capabilities `lab` needs of `qemu`, probed once per binary in
    /// this process (cache key: the resolved path, size and mtime, so a
    /// replaced binary is asked again). Only what a lab uses is asked:
    /// `rombar` only when a device sets it (`-device vfio-pci,help` costs
    /// about 40 ms).
    public static func probe(for lab: Lab, environment: [String: String] = currentEnvironment()) -> QEMUCapabilities {
        guard lab.devices.contains(where: { $0.passthrough?.rombar != nil }) else { return QEMUCapabilities() }
        let binary = BinaryIdentity(lab.qemu, environment: environment)
        if let binary, let known = cache.withLock({ $0[binary] }) { return known }
        let probed = QEMUCapabilities(rombar: RombarSpelling.probe(qemu: lab.qemu))
        if let binary { cache.withLock { $0[binary] = probed } }
        return probed
    }

    private static let cache = Mutex<[BinaryIdentity: QEMUCapabilities]>([:])

    /// An executable as found (a path, or the first match on PATH) with its size and mtime (`stat(2)`).
    struct BinaryIdentity: Hashable, Sendable {
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
