/// How snapshot reverts put a lab's guest RAM back.
public enum RevertMethod: String, Sendable, Hashable, Codable {
    /// Guest RAM in a file (`memory-backend-file`); a snapshot keeps a copy of
    /// it (a RAM image) and its device state alone (`x-ignore-shared`); a
    /// revert is a fresh QEMU on a private copy-on-write map of the image.
    case fast
    /// QEMU's own `snapshot-load`/`loadvm` in place (RAM in the qcow2 snapshot).
    case loadvm
}

/// The `revert` part of the lab record: the method the plan chose and why,
/// and where the RAM files are. The supervisor updates `mappedSnapshot` when
/// it replaces QEMU.
public struct RevertRecord: Sendable, Hashable, Codable {
    public var method: RevertMethod
    /// Why this method: "fast: ..." or "loadvm: RAMDIR has 300 MiB free, needs 2048".
    public var reason: String
    /// RAMDIR: the lab's RAM files (live.ram, snap-TAG.ram); nil for loadvm.
    public var ramDirectory: String?
    /// Guest RAM in MiB (`size=` of the memory backend).
    public var memoryMiB: Int
    /// The snapshot whose RAM image this QEMU maps copy-on-write (share=off)
    /// after a fast revert; nil while it runs on the live file (share=on).
    public var mappedSnapshot: String?
    /// What each snapshot's RAM image was when `snapshot save` wrote it, by tag:
    /// a load refuses an image that no longer matches (``RAMImage/loadObstacle(tag:revert:directory:)``).
    public var images: [String: RAMImageFingerprint]?
    /// A fast save or load under way (or left by a command that was killed):
    /// the next command on the lab finishes it (``PendingSnapshotStep``).
    public var pending: PendingSnapshotStep?

    public init(method: RevertMethod, reason: String, ramDirectory: String? = nil, memoryMiB: Int, mappedSnapshot: String? = nil) {
        self.method = method
        self.reason = reason
        self.ramDirectory = ramDirectory
        self.memoryMiB = memoryMiB
        self.mappedSnapshot = mappedSnapshot
    }

    enum CodingKeys: String, CodingKey {
        case method, reason
        case ramDirectory = "ram_directory"
        case memoryMiB = "memory_mib"
        case mappedSnapshot = "mapped_snapshot"
        case images = "ram_images"
        case pending
    }

    /// The live RAM file QEMU maps shared (`RAMDIR/live.ram`).
    public var liveFile: String? { ramDirectory.map { $0 + "/" + RAMFiles.live } }

    /// The RAM image of snapshot `tag` (`RAMDIR/snap-TAG.ram`).
    public func imagePath(_ tag: String) -> String? { ramDirectory.map { $0 + "/" + RAMFiles.image(tag) } }
}

/// A fast save or load recorded while it runs, so that whatever kills the
/// command half-way, the next command on the lab finds what to finish: a
/// save left the VM stopped with `x-ignore-shared` on (and maybe a job
/// running); a load left the new QEMU stopped, loaded or not.
public struct PendingSnapshotStep: Sendable, Hashable, Codable {
    public enum Operation: String, Sendable, Hashable, Codable {
        case save, load
    }

    public enum Phase: String, Sendable, Hashable, Codable {
        /// save: the VM is stopped for the RAM image and job; load: the supervisor is replacing QEMU.
        case started
        /// load: the new QEMU has loaded the snapshot and is stopped until the client resumes it.
        case loaded
        /// load: the new QEMU's load failed; it stays stopped (a later good load resumes it).
        case failed
    }

    public var operation: Operation
    public var tag: String
    /// The VM ran before the operation, so it runs again once the operation is done.
    public var resume: Bool
    public var phase: Phase

    public init(operation: Operation, tag: String, resume: Bool, phase: Phase) {
        self.operation = operation
        self.tag = tag
        self.resume = resume
        self.phase = phase
    }
}

/// Names of the files in a lab's RAM directory.
public enum RAMFiles {
    public static let live = "live.ram"
    public static func image(_ tag: String) -> String { "snap-\(tag).ram" }
    /// Written first, renamed to ``image(_:)`` once complete.
    public static func temporaryImage(_ tag: String) -> String { ".snap-\(tag).ram.tmp" }
    /// The QOM id of the RAM backend: `pc.ram`, the id QEMU's own `-m` RAM
    /// has, so snapshots stay loadable into a VM started with plain `-m`.
    public static let backendID = "pc.ram"

    /// `-object memory-backend-file,...` for `path` (commas in it doubled, as QemuOpts reads them).
    public static func backendOption(path: String, memoryMiB: Int, shared: Bool) -> String {
        let escaped = path.split(separator: ",", omittingEmptySubsequences: false).joined(separator: ",,")
        return "memory-backend-file,id=\(backendID),size=\(memoryMiB)M,mem-path=\(escaped),share=\(shared ? "on" : "off")"
    }

    /// `argv` with the RAM backend switched to `path` (copy-on-write when not
    /// `shared`) and `-S` added: the command line of a QEMU that replaces a
    /// lab's QEMU for a fast revert. nil when `argv` has no qlab RAM backend.
    public static func restartArgv(_ argv: [String], path: String, memoryMiB: Int, shared: Bool) -> [String]? {
        var result = argv
        guard let index = result.indices.dropLast().first(where: {
            result[$0] == "-object" && result[$0 + 1].hasPrefix("memory-backend-file,id=\(backendID),")
        }) else { return nil }
        result[index + 1] = backendOption(path: path, memoryMiB: memoryMiB, shared: shared)
        if !result.contains("-S") { result.append("-S") }
        return result
    }
}
