import Platform
import QMP

/// Who holds a host card: written by the holder into the card's lock file
/// (``CardLock``) and read by whoever finds it busy, for its message.
public struct CardHolder: Sendable, Hashable {
    /// The lab that has the card.
    public var lab: String
    /// The card the lab named; another member of its IOMMU group is held with it.
    public var card: String
    /// How the holder was started, as `ps` shows it: "qlab run labs/x.yaml".
    public var command: String
    /// The process that holds the lock (the `qlab run`, or the supervisor of a lab `qlab up` started).
    public var pid: Int32
    /// Seconds since the epoch when the card was taken.
    public var since: Double

    public init(lab: String, card: String, command: String, pid: Int32, since: Double) {
        self.lab = lab
        self.card = card
        self.command = command
        self.pid = pid
        self.since = since
    }

    /// "lab bench (qlab run labs/bench.yaml, pid 4242, since 2026-12-07T05:31:07Z)".
    public var description: String { "lab \(lab) (\(command), pid \(pid), since \(formatTimestamp(since)))" }

    public var json: JSONValue {
        ["lab": .string(lab), "card": .string(card), "command": .string(command), "pid": JSONValue(Int(pid)), "since": .string(formatTimestamp(since))]
    }

    /// The record as stored: `since` as seconds, so it reads back exactly.
    var stored: JSONValue {
        ["lab": .string(lab), "card": .string(card), "command": .string(command), "pid": JSONValue(Int(pid)), "since": .double(since)]
    }

    init?(stored value: JSONValue) {
        guard let lab = value["lab"]?.stringValue, let card = value["card"]?.stringValue, let command = value["command"]?.stringValue,
            let pid = value["pid"]?.intValue, let pid32 = Int32(exactly: pid), let since = value["since"]?.doubleValue
        else { return nil }
        self.init(lab: lab, card: card, command: command, pid: pid32, since: since)
    }
}

/// Where the card locks live: `$QLAB_CARDS_DIR`; else, for root, `/run/qlab/.cards`
/// (`$QLAB_RUNTIME_DIR/.cards` when that is set, so a test's labs are apart), one
/// directory for everything root runs on the host; else `RUNTIME_ROOT/.cards` (the
/// user's runtime root, ``LabDirectories/runtimeRoot(environment:uid:)``): a user's
/// labs reserve cards among themselves. A directory qlab made and owns (0700), like
/// every other it uses: a directory several users share would be one qlab did not
/// make. Several people sharing a host's cards run qlab as root (sudo) to share one
/// set of reservations (docs/cards.md). The dot keeps it out of `qlab list` (no lab
/// name starts with one).
public enum CardLockDirectory {
    public static func path(environment: [String: String], uid: UInt32) -> String {
        if let dir = environment["QLAB_CARDS_DIR"], !dir.isEmpty { return dir }
        if uid == 0 {
            if let dir = environment["QLAB_RUNTIME_DIR"], !dir.isEmpty { return dir + "/.cards" }
            return "/run/qlab/.cards"
        }
        return LabDirectories.runtimeRoot(environment: environment, uid: uid) + "/.cards"
    }

    /// The directory, checked (``PrivateDirectory``); with `create`, made (0700) when missing.
    public static func open(environment: [String: String], create: Bool) throws(UnsafeDirectoryError) -> PrivateDirectory? {
        let path = path(environment: environment, uid: ThisProcess.effectiveUserID)
        if let dir = environment["QLAB_CARDS_DIR"], !dir.isEmpty { return try PrivateDirectory.open(path, role: .cards, create: create) }
        // `.cards` in a runtime root: the root is made as the runtime code makes it (0700), then this below it.
        guard let root = try PrivateDirectory.open(Paths.directory(of: path), role: .runtime, create: create) else { return nil }
        return try root.subdirectory(Paths.baseName(path), create: create)
    }

    /// The lock file's name for a card: `pci-0000:01:01.0.lock`.
    public static func fileName(_ address: String) -> String { "pci-\(address).lock" }
}

/// An exclusive `flock(2)` on one card's lock file (0600, opened with
/// `O_NOFOLLOW` in ``CardLockDirectory``). The kernel drops it when the last
/// descriptor of its open file goes: with the holder's exit, SIGKILL included,
/// so a reservation never goes stale. `qlab up` hands the descriptor to the
/// lab's supervisor, which lives as long as the lab (``descriptor``).
///
/// Lock files stay (one small file per card ever used): unlinking one a waiter
/// has open would let two holders lock two files of one name.
public final class CardLock: Sendable {
    public let address: String
    public let directory: PrivateDirectory
    private let fd: FileDescriptor

    /// The descriptor to keep open in a process that holds the card on (a supervisor).
    public var descriptor: Int32 { fd.rawValue }
    public var path: String { directory.path(CardLockDirectory.fileName(address)) }

    private init(address: String, directory: PrivateDirectory, fd: FileDescriptor) {
        self.address = address
        self.directory = directory
        self.fd = fd
    }

    /// One try: the lock, or nil when another holder has the card.
    public static func tryTake(_ address: String, in directory: PrivateDirectory) throws(SystemCallError) -> CardLock? {
        let name = CardLockDirectory.fileName(address)
        let fd: FileDescriptor
        switch directory.handle.openAt(name, .readWrite, options: [.create, .noFollow], permissions: [.ownerReadWrite]) {
        case .success(let opened): fd = opened
        case .failure(let error): throw SystemCallError("open \(directory.path(name))", error)
        }
        switch fd.tryLockExclusive() {
        case .success: return CardLock(address: address, directory: directory, fd: fd)
        case .failure(let error):
            fd.closeIgnoringErrors()
            if error.isWouldBlock || error == .interrupted { return nil }
            throw SystemCallError("flock \(directory.path(name))", error)
        }
    }

    /// Writes who holds the card into the lock file (replacing what an earlier holder wrote).
    public func record(_ holder: CardHolder) {
        guard var bytes = try? holder.stored.serialized(pretty: false) else { return }
        bytes.append(UInt8(ascii: "\n"))
        _ = fd.truncate(toSize: 0)
        _ = fd.writeEvery(bytes, atOffset: 0)
    }

    /// What a card's lock says now: `nil` when nobody holds it; else its holder
    /// as recorded (`.some(nil)` when the record is missing or being written).
    /// The probe is a shared `flock(2)` taken and dropped at once.
    public static func holder(of address: String, in directory: PrivateDirectory) -> CardHolder?? {
        let name = CardLockDirectory.fileName(address)
        guard case .success(let fd) = directory.handle.openAt(name, .readOnly, options: [.noFollow, .nonBlocking]) else { return nil }
        defer { fd.closeIgnoringErrors() }
        if case .success = fd.tryLockShared() {
            fd.unlock()
            return nil
        }
        guard let bytes = directory.read(name, limit: 4096), let value = try? JSONValue.parse(bytes) else { return .some(nil) }
        return .some(CardHolder(stored: value))
    }

    /// Only closed, never `flock(LOCK_UN)`: the lock belongs to the open file, which a
    /// supervisor and its QEMU share by inheritance; an unlock here would free the card
    /// under them. The kernel drops it when the last of those descriptors closes.
    deinit {
        fd.closeIgnoringErrors()
    }
}
