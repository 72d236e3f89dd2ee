#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Thin wrappers over the system calls the host checks read files with.
/// Sysfs attributes are small; a read returns what one `read(2)` loop gives
/// until end of file, which is how the kernel serves them.
public enum HostFiles {
    /// The whole file as bytes: `open(2)` + `read(2)` until EOF. `nil` when it
    /// cannot be opened or read (missing, permission, or the kernel refused).
    public static func readBytes(_ path: String, limit: Int = 1 << 20) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return FileSystem.readAll(fd, limit: limit)
    }

    /// The file as UTF-8 text, or `nil` when it cannot be read.
    public static func readText(_ path: String) -> String? {
        readBytes(path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The file's text with surrounding whitespace (the kernel's trailing newline) removed.
    public static func readValue(_ path: String) -> String? {
        readText(path).map { trim($0) }
    }

    /// The target of a symbolic link as stored: `readlink(2)`.
    public static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count >= 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The last component of a symbolic link's target, e.g. the driver's name
    /// from `driver -> ../../../bus/pci/drivers/aic7xxx`.
    public static func linkName(_ path: String) -> String? {
        readLink(path).map { lastComponent($0) }
    }

    /// The canonical path with every symbolic link resolved: `realpath(3)`.
    public static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The names in a directory, sorted, without `.` and `..`: `opendir(3)`/`readdir(3)`.
    /// `nil` when the directory cannot be opened.
    public static func list(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        return sortedNames(dir)
    }

    /// Whether this process may read and write the path: `access(2)` with `R_OK | W_OK`.
    /// Uses the real user id, as the kernel does for access(2).
    public static func canReadWrite(_ path: String) -> Bool {
        access(path, R_OK | W_OK) == 0
    }

    package static func trim(_ text: String) -> String {
        var scalars = Substring(text)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }

    package static func lastComponent(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }
}

extension HostFiles {
    /// The entries of an open directory stream, sorted, without `.` and `..` (`readdir(3)`).
    package static func sortedNames(_ dir: OpaquePointer) -> [String] {
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}
