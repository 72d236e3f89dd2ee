import Platform

/// The few file-system calls lab loading needs, as thin wrappers.
package enum LabPaths {
    /// The whole file as UTF-8 text (`open`, `read`), or an errno message.
    package static func readText(_ path: String) -> Result<String, LabPathError> {
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(path, .readOnly, options: .closeOnExec) } catch {
            return .failure(LabPathError(error))
        }
        defer { fd.closeIgnoringErrors() }
        guard let bytes = fd.readAll(limit: (16 << 20) + 1) else { return .failure(LabPathError(Errno.current)) }
        if bytes.count > 16 << 20 { return .failure(LabPathError(message: "larger than 16 MiB; not a lab file")) }
        return .success(String(decoding: bytes, as: UTF8.self))
    }

    /// The first `count` bytes of a regular file, or nil when it cannot be
    /// read or is not a regular file. Opened O_NONBLOCK, so a FIFO put where
    /// an image belongs cannot block the open.
    package static func readPrefix(_ path: String, count: Int) -> [UInt8]? {
        guard let fd = try? FileDescriptor.open(path, .readOnly, options: [.closeOnExec, .nonBlocking]) else { return nil }
        defer { fd.closeIgnoringErrors() }
        guard case .success(let status) = FileStatus.of(descriptor: fd), status.kind == .regular else { return nil }
        var buffer = [UInt8](repeating: 0, count: count)
        guard case .success(let n) = buffer.withUnsafeMutableBytes({ fd.readSome(into: $0) }) else { return nil }
        return Array(buffer[0..<n])
    }

    /// What `path` is when it exists and is not a regular file or a block
    /// device ("a directory", "a FIFO", ...), from `stat`; nil otherwise.
    package static func unusableFileKind(_ path: String) -> String? {
        guard let status = FileStatus.following(path) else { return nil }
        switch status.kind {
        case .regular, .blockDevice: return nil
        case .directory: return "a directory"
        case .fifo: return "a FIFO (named pipe)"
        case .characterDevice: return "a character device"
        case .socket: return "a socket"
        case .symbolicLink, .other: return "not a regular file"
        }
    }

    /// `qcow2` when the file starts with qcow2's magic, `raw` when it exists
    /// otherwise, and by extension when it does not exist yet.
    package static func imageFormat(_ path: String) -> String {
        if let head = readPrefix(path, count: 4) {
            return head == [0x51, 0x46, 0x49, 0xFB] ? "qcow2" : "raw"
        }
        return path.hasSuffix(".qcow2") ? "qcow2" : "raw"
    }
}

package struct LabPathError: Error {
    package var message: String

    package init(message: String) { self.message = message }
    package init(errno code: Int32) { self.message = SystemErrno(code).description }
    /// The text of swift-system's error (an `Errno` from one of its calls).
    package init(_ error: any Error) { self.message = (error as? Errno).map { SystemErrno($0).description } ?? "\(error)" }
}
