#if canImport(Glibc)
import Glibc
#endif
import Platform

/// What a fast `snapshot save` wrote as a snapshot's RAM image, recorded in
/// the lab record (`revert.ram_images`) so a load can tell that the file at
/// `snap-TAG.ram` is still that image before any QEMU maps it.
///
/// Size, device and inode, and modification time catch a file put in its
/// place, truncated or written to. A digest of samples from the image's data
/// (not its holes) catches a change that kept those; it reads
/// ``sampleCount`` x ``sampleSize`` bytes (32 KiB) at load, never the whole image. The digest (64-bit
/// FNV-1a) finds accidents, not an attacker: the RAM directory is private to
/// this user, who could as well change the record.
public struct RAMImageFingerprint: Sendable, Hashable, Codable {
    public var size: Int
    public var device: UInt64
    public var inode: UInt64
    public var modifiedSeconds: Int64
    public var modifiedNanoseconds: Int64
    /// Offsets of the samples (page starts), spread evenly over the image's data.
    public var sampleOffsets: [Int]
    /// FNV-1a over each sample's offset and bytes, 16 hex digits.
    public var sampleDigest: String

    /// Samples per image, the bytes read at each (from the start of a page), and the page size.
    public static let sampleCount = 64
    public static let sampleSize = 512
    public static let pageSize = 4096

    enum CodingKeys: String, CodingKey {
        case size, device, inode
        case modifiedSeconds = "mtime_seconds"
        case modifiedNanoseconds = "mtime_nanoseconds"
        case sampleOffsets = "sample_offsets"
        case sampleDigest = "sample_digest"
    }

    /// The fingerprint of the open image `fd` whose data lies in `extents`
    /// (start, end) byte ranges, as the copy wrote them.
    static func take(_ fd: Int32, extents: [(start: Int, end: Int)], path: String) throws -> RAMImageFingerprint {
        let identity: FileIdentity
        switch FileIdentity.of(descriptor: fd) {
        case .success(let found): identity = found
        case .failure(let error): throw LabError.system("fstat \(path): \(error)")
        }
        let offsets = sampleOffsets(extents)
        return RAMImageFingerprint(
            size: identity.size, device: identity.device, inode: identity.inode,
            modifiedSeconds: identity.modifiedSeconds, modifiedNanoseconds: identity.modifiedNanoseconds,
            sampleOffsets: offsets, sampleDigest: try digest(fd, offsets: offsets, path: path))
    }

    /// ``sampleCount`` page-aligned offsets spread evenly over the data in
    /// `extents` (the first page of the data included); `[0]` when there is none.
    package static func sampleOffsets(_ extents: [(start: Int, end: Int)]) -> [Int] {
        let total = extents.reduce(0) { $0 + ($1.end - $1.start) }
        guard total > 0 else { return [0] }
        var offsets: [Int] = []
        for index in 0..<sampleCount {
            var position = total / sampleCount * index
            for extent in extents {
                let length = extent.end - extent.start
                if position < length {
                    let offset = (extent.start + position) / pageSize * pageSize
                    if offsets.last != offset { offsets.append(offset) }
                    break
                }
                position -= length
            }
        }
        return offsets
    }

    /// FNV-1a 64 over 64-bit words (little-endian): each offset, then the
    /// ``sampleSize`` bytes there. Words, not bytes, and 512 bytes a sample:
    /// 32 KiB hashed in 4,096 steps, which is little even in a debug build.
    static func digest(_ fd: Int32, offsets: [Int], path: String) throws -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        let prime: UInt64 = 0x0000_0100_0000_01b3
        for offset in offsets {
            hash = (hash ^ UInt64(offset)) &* prime
            let bytes: [UInt8]
            switch FileSpace.read(fd, count: sampleSize, at: offset) {
            case .success(let read): bytes = read
            case .failure(let error): throw LabError.system("reading \(path): \(error)")
            }
            hash = bytes.withUnsafeBytes { raw in
                var hash = hash
                let words = raw.count / 8
                var index = 0
                while index < words {
                    hash = (hash ^ UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: index &* 8, as: UInt64.self))) &* prime
                    index &+= 1
                }
                index = words &* 8
                while index < raw.count {
                    hash = (hash ^ UInt64(raw[index])) &* prime
                    index &+= 1
                }
                return hash
            }
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// What differs between this fingerprint and the image named `name` in
    /// `directory` now (`openat(2)` with `O_NOFOLLOW`); empty when it is the
    /// image that was saved. Reads only the samples.
    public func changes(of name: String, in directory: PrivateDirectory) -> [String] {
        let path = directory.path(name)
        let fd = openat(directory.descriptor, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let error = SystemErrno(errno)
            return [error.code == ENOENT ? "it is gone" : "it cannot be opened (\(error))"]
        }
        defer { close(fd) }
        guard case .success(let now) = FileIdentity.of(descriptor: fd) else { return ["fstat failed"] }
        guard case .success(let status) = FileStatus.of(descriptor: fd), status.kind == .regular else { return ["it is not a regular file"] }
        var changes: [String] = []
        if now.device != device || now.inode != inode {
            changes.append("another file is in its place (device \(device) inode \(inode) then, device \(now.device) inode \(now.inode) now)")
        }
        if now.size != size { changes.append("its size was \(size) bytes, is \(now.size)") }
        if now.modifiedSeconds != modifiedSeconds || now.modifiedNanoseconds != modifiedNanoseconds {
            changes.append("it was modified after the save (mtime \(Self.time(modifiedSeconds, modifiedNanoseconds)), now \(Self.time(now.modifiedSeconds, now.modifiedNanoseconds)))")
        }
        // Only read pages of a file that still looks like the image: the cheap checks say enough otherwise.
        if changes.isEmpty {
            do {
                let found = try Self.digest(fd, offsets: sampleOffsets, path: path)
                if found != sampleDigest {
                    changes.append("its content differs (digest of \(sampleOffsets.count) samples \(sampleDigest) at the save, \(found) now)")
                }
            } catch {
                changes.append("\(error)")
            }
        }
        return changes
    }

    static func time(_ seconds: Int64, _ nanoseconds: Int64) -> String {
        let fraction = String(nanoseconds)
        return formatTimestamp(Double(seconds)).dropLast() + "." + String(repeating: "0", count: 9 - fraction.count) + fraction + "Z"
    }
}

extension RAMImage {
    /// Why snapshot `tag`'s RAM image must not be loaded; nil when it is the
    /// image the save recorded. A lab whose record has no fingerprint of it
    /// (saved by an older qlab, or made by hand) is refused as well.
    public static func loadObstacle(tag: String, revert: RevertRecord, directory: PrivateDirectory) -> String? {
        let name = RAMFiles.image(tag)
        let path = directory.path(name)
        guard directory.contains(name) else {
            return "snapshot \(tag) has no RAM image (\(path)): it was saved without the fast method; revert it with loadvm"
        }
        guard let fingerprint = revert.images?[tag] else {
            return "snapshot \(tag)'s RAM image \(path) is not one this lab's `snapshot save` recorded (saved by an older qlab, or put there by hand); "
                + "qlab will not map it as the guest's memory. Save the snapshot again (`qlab snapshot save LAB \(tag) --replace`)"
        }
        let changes = fingerprint.changes(of: name, in: directory)
        guard !changes.isEmpty else { return nil }
        return "snapshot \(tag)'s RAM image \(path) is not the one `snapshot save` wrote: " + changes.joined(separator: "; ")
            + ". Loading it would run the guest on other memory, so qlab refused before touching QEMU. Save the snapshot again (`qlab snapshot save LAB \(tag) --replace`) or delete it"
    }
}

extension LabRuntime {
    /// Records in this lab's record the fingerprint `source` has of snapshot
    /// `tag`'s RAM image: a `--jobs` clone given the image as a hard link
    /// (``RAMImage/shareImage(tag:from:into:)``) holds the same file. The
    /// record is read again first: the clone's supervisor wrote it.
    public func adoptRAMImageFingerprint(tag: String, from source: LabRecord) throws {
        guard let fingerprint = source.revert?.images?[tag] else { return }
        _ = try records.reload()
        try records.update { record in
            if record.revert?.images == nil { record.revert?.images = [:] }
            record.revert?.images?[tag] = fingerprint
        }
    }
}
