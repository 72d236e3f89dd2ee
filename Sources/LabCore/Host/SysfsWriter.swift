import Platform

/// The one way qlab writes to sysfs (driver_override, unbind, drivers_probe,
/// bind, a config space word). Every write is logged; in dry-run mode nothing
/// is written and the log is the plan. Tests read the log, and may install
/// `kernel` to play the kernel's part after each write (move a driver link,
/// keep a read-only bit) in a tree they built.
public final class SysfsWriter {
    public struct Write: Sendable, Hashable, CustomStringConvertible {
        public var path: String
        public var bytes: [UInt8]
        /// A byte offset for positioned writes (config space); `nil` for attribute writes.
        public var offset: Int?

        public var text: String { String(decoding: bytes, as: UTF8.self) }

        /// `echo 'vfio-pci' > /sys/.../driver_override`, or for positioned writes the bytes in hex.
        public var description: String {
            if let offset {
                let hex = bytes.map { PCIDeviceIDs.hex4($0).suffix(2) }.joined(separator: " ")
                return "write \(hex) at offset 0x\(String(offset, radix: 16)) of \(path)"
            }
            let shown = text.hasSuffix("\n") ? String(text.dropLast()) : text
            return "echo '\(shown)' > \(path)"
        }
    }

    public struct WriteError: Error, Sendable, CustomStringConvertible {
        public var write: Write
        public var errno: Int32
        public var description: String {
            "cannot write to \(write.path): \(SystemErrno(errno)) (errno \(errno))"
        }
    }

    public let dryRun: Bool
    public private(set) var log: [Write] = []
    /// Called with each write before it is made (the CLI prints them).
    public var onWrite: ((Write) -> Void)?
    /// Called after each successful real write; tests use it to act as the kernel would.
    public var kernel: ((Write) throws -> Void)?

    public init(dryRun: Bool = false) { self.dryRun = dryRun }

    /// Writes a sysfs attribute in one `write(2)` after `open(2)` with `O_WRONLY|O_TRUNC`,
    /// as `echo text > path` does; the kernel parses each write call whole.
    public func write(_ text: String, to path: String) throws {
        try perform(Write(path: path, bytes: Array(text.utf8), offset: nil))
    }

    /// Writes bytes at an offset with `pwrite(2)`, as for the `config` file.
    public func write(_ bytes: [UInt8], to path: String, at offset: Int) throws {
        try perform(Write(path: path, bytes: bytes, offset: offset))
    }

    private func perform(_ write: Write) throws {
        onWrite?(write)
        log.append(write)
        if dryRun { return }
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(write.path, .writeOnly, options: write.offset == nil ? [.truncate, .closeOnExec] : .closeOnExec)
        } catch {
            throw WriteError(write: write, errno: SystemCallError("", thrown: error).errno)
        }
        defer { fd.closeIgnoringErrors() }
        // One write(2) (or pwrite(2)) call: the kernel parses each whole, so a short one is an error, not continued.
        let written: Result<Int, Errno> = write.bytes.withUnsafeBytes { raw in
            if let offset = write.offset {
                do { return .success(try fd.write(toAbsoluteOffset: Int64(offset), raw)) } catch { return .failure((error as? Errno) ?? .ioError) }
            }
            return fd.writeSome(raw)
        }
        switch written {
        case .success(let count) where count == write.bytes.count: break
        case .success: throw WriteError(write: write, errno: Errno.ioError.rawValue)
        case .failure(let error): throw WriteError(write: write, errno: error.rawValue)
        }
        try kernel?(write)
    }
}
