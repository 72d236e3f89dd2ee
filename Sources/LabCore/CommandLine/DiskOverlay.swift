import Platform

/// A problem creating an overlay or a firmware variable store.
public struct ImageToolError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// qcow2 overlays: QEMU writes to them, never to the base image behind them.
public enum DiskOverlay {
    /// Creates a qcow2 overlay at `overlay` backed by `base` (absolute) of
    /// `baseFormat`, with `qemu-img create -f qcow2 -b BASE -F FMT`.
    /// Atomic: made under a temporary name in the same directory, then
    /// `rename(2)`d over `overlay`, so a crash never leaves a half-made
    /// overlay under the real name. An existing overlay is replaced.
    public static func create(
        overlay: String, base: String, baseFormat: String, qemuImg: String = "qemu-img"
    ) async throws(ImageToolError) {
        guard base.hasPrefix("/") else {
            throw ImageToolError(message: "the base image path must be absolute (qemu-img resolves relative backing files against the overlay's directory): \(base)")
        }
        guard FileSystem.exists(base) else {
            throw ImageToolError(message: "base image \(base) does not exist")
        }
        try await atomically(overlay) { (temporary) async throws(ImageToolError) in
            try await runImageTool([qemuImg, "create", "-q", "-f", "qcow2", "-b", base, "-F", baseFormat, temporary])
        }
    }

    /// ``create(overlay:base:baseFormat:qemuImg:)`` for an overlay that is
    /// kept and reused (the guest disk's), recording the base's identity
    /// beside it (`OVERLAY.base`) for ``checkBase(overlay:base:baseFormat:)``.
    public static func createKept(overlay: String, base: String, baseFormat: String, qemuImg: String = "qemu-img") async throws(ImageToolError) {
        let identity = try baseIdentity(base: base, format: baseFormat)
        try await create(overlay: overlay, base: base, baseFormat: baseFormat, qemuImg: qemuImg)
        try writeBaseIdentity(identity, overlay: overlay)
    }

    /// Refuses to reuse `overlay` when its base image is no longer the file
    /// it was made over (other size, modification time, device or inode):
    /// the overlay's writes and snapshots are block-level changes to the old
    /// base and would be read over the new one. An overlay made before qlab
    /// kept the base's identity adopts the current one.
    public static func checkBase(overlay: String, base: String, baseFormat: String) throws(ImageToolError) {
        let current = try baseIdentity(base: base, format: baseFormat)
        guard let bytes = HostFiles.readBytes(baseIdentityPath(overlay), limit: 64 << 10) else {
            try writeBaseIdentity(current, overlay: overlay)
            return
        }
        let recorded = String(decoding: bytes, as: UTF8.self)
        guard recorded != current else { return }
        throw ImageToolError(message: """
            base image \(base) changed after the overlay \(overlay) was made over it (was: \(recorded.split(separator: "\n").dropFirst(2).joined(separator: " ")); \
            now: \(current.split(separator: "\n").dropFirst(2).joined(separator: " "))); the overlay's writes and snapshots belong to the old image. \
            Start over with a new, empty overlay (`qlab up --fresh-disk` and the lab; its snapshots are lost), or put the old base image back
            """)
    }

    /// `OVERLAY.base`: the identity of the base image the overlay was made over.
    static func baseIdentityPath(_ overlay: String) -> String { overlay + ".base" }

    static func writeBaseIdentity(_ identity: String, overlay: String) throws(ImageToolError) {
        do { try FileSystem.writeAtomically(baseIdentityPath(overlay), Array(identity.utf8)) } catch {
            throw ImageToolError(message: "cannot write \(baseIdentityPath(overlay)): \(error)")
        }
    }

    /// The base image as `path\nformat\nsize=N\nmtime=S.NS\ndev=D\ninode=I\n` (`stat(2)`):
    /// a changed size or time, or another file put in its place, shows.
    static func baseIdentity(base: String, format: String) throws(ImageToolError) -> String {
        guard let st = FileStatus.following(base) else {
            throw ImageToolError(message: "base image \(base): \(Errno.current)")
        }
        return "\(base)\n\(format)\nsize=\(st.size)\nmtime=\(st.modifiedSeconds).\(st.modifiedNanoseconds)\ndev=\(st.device)\ninode=\(st.inode)\n"
    }

    /// Runs `body` to make `temporary` (an unpredictable name beside `path`,
    /// nothing there yet), then renames it to `path`; removes it on failure.
    static func atomically(_ path: String, _ body: (String) async throws(ImageToolError) -> Void) async throws(ImageToolError) {
        let temporary = Paths.directory(of: path) + "/" + RandomName.temporary(for: Paths.baseName(path))
        do {
            try await body(temporary)
        } catch {
            FileSystem.remove(temporary)
            throw error
        }
        do throws(SystemCallError) { try FileSystem.rename(temporary, to: path) } catch {
            FileSystem.remove(temporary)
            throw ImageToolError(message: "cannot rename \(temporary) to \(path): \(error.code)")
        }
    }

    /// Awaits the tool without holding a cooperative-pool thread.
    static func runImageTool(_ argv: [String]) async throws(ImageToolError) {
        switch await ToolRunner.run(argv) {
        case .failure(let error):
            throw ImageToolError(message: error.message)
        case .success(let outcome) where outcome.status != 0:
            throw ImageToolError(message: "\(argv[0]) failed (exit \(outcome.status)): \(outcome.output.trimmingSpaces())")
        case .success:
            return
        }
    }
}

/// The per-lab UEFI variable store.
public enum FirmwareVariables {
    /// Converts the raw OVMF variable template to qcow2 at `path` (atomically).
    /// qcow2 because a raw pflash drive is writable but cannot hold snapshots,
    /// and QEMU then refuses every savevm ("Device 'pflash1' is writable but
    /// does not support snapshots").
    public static func create(at path: String, template: String = OSProfile.ovmfVars, qemuImg: String = "qemu-img") async throws(ImageToolError) {
        guard FileSystem.exists(template) else {
            throw ImageToolError(message: "UEFI variable template \(template) does not exist; install Debian's ovmf package or set firmware_vars:")
        }
        try await DiskOverlay.atomically(path) { (temporary) async throws(ImageToolError) in
            try await DiskOverlay.runImageTool([qemuImg, "convert", "-q", "-f", "raw", "-O", "qcow2", template, temporary])
        }
    }
}
