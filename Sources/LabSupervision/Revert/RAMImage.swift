#if canImport(Glibc)
import Glibc
#endif
// Glibc: Revert/ (its fast-revert trust work landed last) still calls the system itself; moving it onto Platform's
// wrappers (FileDescriptor.openAt, pipeCloseOnExec, ChildProcess.killAndReap) is what is left of issue 19 item 4.
import Platform
import QMP

/// Guest RAM files in a lab's RAM directory: the free-space check and the
/// copy of the live RAM file into a snapshot's RAM image.
public enum RAMImage {
    /// `SEEK_DATA` and `SEEK_HOLE` of Linux's `lseek(2)` (glibc declares them only under _GNU_SOURCE).
    static let seekData: Int32 = 3
    static let seekHole: Int32 = 4

    /// Bytes free for this user on the filesystem holding `path`
    /// (`statvfs(3)`: `f_bavail * f_frsize`); the nearest existing directory
    /// above it when `path` does not exist yet. nil when none can be asked.
    public static func freeBytes(at path: String) -> UInt64? {
        var candidate = path
        while true {
            var info = statvfs()
            if statvfs(candidate, &info) == 0 { return UInt64(info.f_bavail) * UInt64(info.f_frsize) }
            guard errno == ENOENT, candidate != "/", !candidate.isEmpty else { return nil }
            candidate = Paths.directory(of: candidate)
        }
    }

    /// Copies `RAMDIR/live.ram` to `RAMDIR/snap-TAG.ram`: written under a
    /// temporary name and renamed once complete (`renameat(2)`), so a RAM
    /// image is never half-written. Only the live file's data extents are
    /// copied (`lseek(2)` `SEEK_DATA`/`SEEK_HOLE`): pages the guest never
    /// touched stay holes and cost no memory. The VM must be stopped.
    /// Checks first that the filesystem has room for the data. Returns the
    /// bytes copied and the image's fingerprint, taken before the rename
    /// (which changes neither), for the lab record.
    public static func saveImage(in directory: PrivateDirectory, tag: String) throws -> (bytes: Int, fingerprint: RAMImageFingerprint) {
        let copied = try copyDataExtents(
            in: directory, from: RAMFiles.live, to: RAMFiles.image(tag), temporary: RAMFiles.temporaryImage(tag),
            what: "the RAM image of snapshot \(tag)", fingerprint: true)
        return (copied.bytes, copied.fingerprint!)
    }

    /// Copies snapshot `tag`'s RAM image to `name` in the same directory
    /// (its data extents, under a temporary name, then renamed over whatever
    /// had that name: a QEMU still mapping the old file keeps it until it
    /// exits). For a QEMU that maps the copy `share=on` (``RAMImageMapping``).
    /// Returns the bytes copied.
    public static func copyImage(in directory: PrivateDirectory, tag: String, to name: String) throws -> Int {
        try copyDataExtents(in: directory, from: RAMFiles.image(tag), to: name, temporary: "." + name + ".tmp",
                            what: "a copy of snapshot \(tag)'s RAM image", fingerprint: false).bytes
    }

    /// `source` to `target` in `directory`, data extents only, through
    /// `temporary` and `renameat(2)`; the fingerprint of the copy when asked.
    static func copyDataExtents(
        in directory: PrivateDirectory, from sourceName: String, to targetName: String, temporary: String, what: String, fingerprint takeFingerprint: Bool
    ) throws -> (bytes: Int, fingerprint: RAMImageFingerprint?) {
        let source = openat(directory.descriptor, sourceName, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard source >= 0 else { throw LabError.system("cannot open \(directory.path(sourceName)): \(String(cString: strerror(errno)))") }
        defer { close(source) }
        var info = stat()
        guard fstat(source, &info) == 0 else { throw LabError.system("fstat \(directory.path(sourceName)) failed") }
        let size = Int(info.st_size)
        let allocated = UInt64(info.st_blocks) * 512
        if let free = freeBytes(at: directory.path), free < allocated {
            throw LabError.system(
                "\(directory.path) has \(free >> 20) MiB free; \(what) needs \(allocated >> 20) MiB. Free memory in it, set QLAB_RAM_DIR, or use `revert: loadvm`")
        }
        unlinkat(directory.descriptor, temporary, 0)
        let target = openat(directory.descriptor, temporary, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard target >= 0 else { throw LabError.system("cannot create \(directory.path(temporary)): \(String(cString: strerror(errno)))") }
        var done = false
        defer {
            close(target)
            if !done { unlinkat(directory.descriptor, temporary, 0) }
        }
        guard ftruncate(target, off_t(size)) == 0 else { throw LabError.system("ftruncate \(directory.path(temporary)): \(String(cString: strerror(errno)))") }
        let chunk = 4 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        var copied = 0
        var extents: [(start: Int, end: Int)] = []
        var offset = off_t(0)
        while offset < off_t(size) {
            let data = lseek(source, offset, Self.seekData)
            if data < 0 { break }  // ENXIO: only a hole is left
            var end = lseek(source, data, Self.seekHole)
            if end < 0 { end = off_t(size) }
            var position = data
            while position < end {
                let want = min(chunk, Int(end - position))
                let got = pread(source, buffer, want, position)
                guard got > 0 else { throw LabError.system("reading \(directory.path(sourceName)) failed: \(String(cString: strerror(errno)))") }
                var written = 0
                while written < got {
                    let n = pwrite(target, buffer + written, got - written, position + off_t(written))
                    guard n > 0 else {
                        throw LabError.system("writing \(directory.path(temporary)) failed: \(String(cString: strerror(errno))); free memory in \(directory.path) or set QLAB_RAM_DIR")
                    }
                    written += n
                }
                position += off_t(got)
                copied += got
            }
            extents.append((Int(data), Int(end)))
            offset = end
        }
        let fingerprint = takeFingerprint ? try RAMImageFingerprint.take(target, extents: extents, path: directory.path(temporary)) : nil
        guard renameat(directory.descriptor, temporary, directory.descriptor, targetName) == 0 else {
            throw LabError.system("rename to \(directory.path(targetName)) failed: \(String(cString: strerror(errno)))")
        }
        done = true
        return (copied, fingerprint)
    }

    /// Creates the live RAM file (`RAMDIR/live.ram`, 0600, new) with all
    /// `memoryMiB` of its blocks allocated (``FileSpace/allocate(_:offset:length:)``)
    /// before QEMU maps it: the space is the lab's from the start, so a
    /// guest touching its RAM later cannot meet a full filesystem (QEMU
    /// would die of SIGBUS). Throws when the filesystem has no room; a
    /// filesystem that cannot allocate ahead (EOPNOTSUPP) leaves the file
    /// sparse, which the returned note says.
    public static func allocateLiveFile(in directory: PrivateDirectory, memoryMiB: Int) throws -> String? {
        directory.remove(RAMFiles.live)
        let fd = openat(directory.descriptor, RAMFiles.live, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LabError.system("cannot create \(directory.path(RAMFiles.live)): \(SystemErrno(errno))") }
        defer { close(fd) }
        let bytes = memoryMiB << 20
        switch FileSpace.allocate(fd, offset: 0, length: bytes) {
        case .success:
            return nil
        case .failure(let error) where error.code == EOPNOTSUPP:
            guard ftruncate(fd, off_t(bytes)) == 0 else { throw LabError.system("ftruncate \(directory.path(RAMFiles.live)): \(SystemErrno(errno))") }
            return "\(directory.path) cannot allocate ahead (fallocate: \(error)); the guest's RAM file is sparse and a full filesystem there would kill QEMU with SIGBUS"
        case .failure(let error):
            directory.remove(RAMFiles.live)
            let free = freeBytes(at: directory.path).map { "\($0 >> 20) MiB free" } ?? "its free space unknown"
            throw LabError.system(
                "cannot allocate the guest's \(memoryMiB) MiB of RAM in \(directory.path(RAMFiles.live)) (\(free)): \(error). Free memory there, set QLAB_RAM_DIR, or use `revert: loadvm`")
        }
    }

    /// Gives `target` snapshot `tag`'s RAM image of `source` as a hard link
    /// (`linkat(2)`, neither side followed): the same file, so every QEMU of a
    /// `qlab run --jobs` worker maps the one image copy-on-write and no RAM is
    /// copied; the image lives until the last lab holding a link removes it.
    public static func shareImage(tag: String, from source: PrivateDirectory, into target: PrivateDirectory) throws {
        let name = RAMFiles.image(tag)
        unlinkat(target.descriptor, name, 0)
        guard linkat(source.descriptor, name, target.descriptor, name, 0) == 0 else {
            throw LabError.system("cannot link \(source.path(name)) into \(target.path): \(String(cString: strerror(errno))); both must be on one filesystem (QLAB_RAM_DIR)")
        }
    }
}

extension RAMFiles {
    /// The line qlab adds to the QEMU output of a QEMU that died of SIGBUS
    /// while its guest RAM was a file (the fast method): the kernel raises
    /// SIGBUS when a page of a shared file mapping cannot be allocated (the
    /// tmpfs is full), and QEMU prints nothing. Catalog entry `ram-file-full`.
    public static func sigbusNote(_ exit: ProcessExit, revert: RevertRecord?) -> String? {
        guard exit == .signaled(SIGBUS), let revert, revert.method == .fast, let directory = revert.ramDirectory else { return nil }
        let file = directory + "/" + (revert.mappedSnapshot.map(image) ?? live)
        let free = RAMImage.freeBytes(at: directory).map { "\($0 >> 20) MiB free now" } ?? "its free space unknown"
        return "qlab: QEMU was killed by SIGBUS while its guest RAM was file-backed (\(file); \(free))"
    }
}
