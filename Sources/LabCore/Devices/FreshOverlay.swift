import Platform

/// Fresh qcow2 overlays for hotplugged disks, made fast enough for the
/// revert loop.
///
/// `qemu-img create` costs 25-50 ms per overlay here (a process, and it
/// opens the base image to read its size). An empty overlay is the same
/// bytes every time, so qlab makes one template per disk with
/// ``DiskOverlay/create(overlay:base:baseFormat:qemuImg:)`` and copies it for
/// each attach (well under a millisecond for its ~200 KiB). The template is
/// remade when the base image changes: a key file beside it records the base
/// path, format, size and modification time.
public enum FreshOverlay {
    /// Makes `overlay` a new, empty qcow2 overlay over `base`, atomically
    /// (a copy under a temporary name, then `rename(2)`). The template and its
    /// key live in `templateDirectory` as `NAME.qcow2`/`NAME.key`.
    public static func create(
        overlay: String, base: String, baseFormat: String, templateDirectory: String, name: String
    ) async throws(ImageToolError) {
        let template = templateDirectory + "/" + name + ".qcow2"
        let keyPath = templateDirectory + "/" + name + ".key"
        let key = try templateKey(base: base, format: baseFormat)
        if !FileSystem.entryExists(template) || readSmallFile(keyPath) != key {
            do { try FileSystem.makeDirectory(templateDirectory, mode: 0o700) } catch {
                throw ImageToolError(message: "cannot create \(templateDirectory): \(error)")
            }
            try await DiskOverlay.create(overlay: template, base: base, baseFormat: baseFormat)
            do { try FileSystem.writeAtomically(keyPath, Array(key.utf8)) } catch {
                throw ImageToolError(message: "cannot write \(keyPath): \(error)")
            }
        }
        let directory = Paths.directory(of: overlay)
        if !FileSystem.entryExists(directory) {
            do { try FileSystem.makeDirectory(directory, mode: 0o700) } catch {
                throw ImageToolError(message: "cannot create \(directory): \(error)")
            }
        }
        try await DiskOverlay.atomically(overlay) { (temporary) throws(ImageToolError) in
            try copyFile(template, to: temporary)
        }
    }

    /// The base image's path, format, size, modification time, device and inode (`stat(2)`).
    static func templateKey(base: String, format: String) throws(ImageToolError) -> String {
        try DiskOverlay.baseIdentity(base: base, format: format)
    }

    static func readSmallFile(_ path: String) -> String? {
        guard let bytes = HostFiles.readBytes(path, limit: 64 << 10) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Copies `source` to a new file `destination` (0600; `O_EXCL|O_NOFOLLOW`:
    /// nothing there is reused or followed) with `read(2)`/`write(2)`.
    static func copyFile(_ source: String, to destination: String) throws(ImageToolError) {
        let input: FileDescriptor
        do { input = try FileDescriptor.open(source, .readOnly, options: .closeOnExec) } catch {
            throw ImageToolError(message: "cannot open \(source): \(SystemCallError("", thrown: error).code)")
        }
        defer { input.closeIgnoringErrors() }
        let output: FileDescriptor
        do {
            output = try FileDescriptor.open(
                destination, .writeOnly, options: [.create, .exclusiveCreate, .noFollow, .closeOnExec], permissions: [.ownerReadWrite])
        } catch {
            throw ImageToolError(message: "cannot create \(destination): \(SystemCallError("", thrown: error).code)")
        }
        defer { output.closeIgnoringErrors() }
        var buffer = [UInt8](repeating: 0, count: 256 << 10)
        while true {
            let n: Int
            switch buffer.withUnsafeMutableBytes({ input.readSome(into: $0) }) {
            case .success(let count): n = count
            case .failure(let error): throw ImageToolError(message: "cannot read \(source): \(error)")
            }
            if n == 0 { return }
            do throws(SystemCallError) { try output.writeEvery(buffer[0..<n], what: destination) } catch {
                throw ImageToolError(message: "cannot write \(destination): \(error.code)")
            }
        }
    }
}
