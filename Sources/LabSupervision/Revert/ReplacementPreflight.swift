import Platform

/// What a QEMU started for a fast revert needs on disk, checked before the
/// old QEMU quits: once it has, a new QEMU that cannot start leaves the lab
/// with none. The RAM image is checked by its fingerprint
/// (``RAMImage/loadObstacle(tag:revert:directory:)``); here the disks:
/// every `-blockdev` file node's `filename` (the guest disk overlay, disks
/// of boot-attached devices, firmware variables) and, for qcow2 images, their
/// backing chains, read from the qcow2 headers.
package enum ReplacementPreflight {
    struct Unreadable: Error, CustomStringConvertible {
        var description: String
    }

    /// One line per file the new QEMU could not open; empty when all are there.
    package static func missingFiles(_ argv: [String]) -> [String] {
        var problems: [String] = []
        for path in blockdevFiles(argv) {
            var current = path
            var role = "disk image"
            for _ in 0..<16 {
                switch qcow2Backing(of: current) {
                case .failure(let error):
                    problems.append("\(role) \(current): \(error)" + (current == path ? "" : " (in the backing chain of \(path))"))
                case .success(nil):
                    break
                case .success(let backing?):
                    current = backing
                    role = "backing file"
                    continue
                }
                break
            }
        }
        return problems
    }

    /// The `filename=` of each `-blockdev driver=file,...` (QemuOpts: `,,` is a comma).
    package static func blockdevFiles(_ argv: [String]) -> [String] {
        var files: [String] = []
        for (index, argument) in argv.enumerated() where argument == "-blockdev" && index + 1 < argv.count {
            let options = splitOptions(argv[index + 1])
            guard options["driver"] == "file", let file = options["filename"] else { continue }
            files.append(file)
        }
        return files
    }

    /// `key=value,key=value` with `,,` standing for a comma in a value.
    static func splitOptions(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        var parts: [String] = []
        var current = ""
        var characters = Array(text)[...]
        while let character = characters.popFirst() {
            if character == "," {
                if characters.first == "," {
                    characters.removeFirst()
                    current.append(",")
                } else {
                    parts.append(current)
                    current = ""
                }
            } else {
                current.append(character)
            }
        }
        parts.append(current)
        for part in parts {
            guard let equals = part.firstIndex(of: "=") else { continue }
            result[String(part[..<equals])] = String(part[part.index(after: equals)...])
        }
        return result
    }

    /// The backing file a qcow2 image names (a relative name taken from the
    /// image's directory, as QEMU does), nil for an image without one or a
    /// file that is not qcow2; the errno when the file cannot be read.
    /// A backing name with a protocol (`json:`, `nbd://`) is not followed.
    static func qcow2Backing(of path: String) -> Result<String?, Unreadable> {
        let header: [UInt8]
        switch FileSpace.read(path: path, count: 20, at: 0) {
        case .success(let bytes): header = bytes
        case .failure(let error): return .failure(Unreadable(description: "\(error)"))
        }
        guard header.count == 20, header[0..<4].elementsEqual([0x51, 0x46, 0x49, 0xFB]) else { return .success(nil) }
        let offset = header[8..<16].reduce(0) { $0 << 8 | Int($1) }
        let length = header[16..<20].reduce(0) { $0 << 8 | Int($1) }
        guard offset > 0, length > 0, length < 4096 else { return .success(nil) }
        guard case .success(let bytes) = FileSpace.read(path: path, count: length, at: offset), bytes.count == length else {
            return .failure(Unreadable(description: "its backing file name cannot be read from the qcow2 header"))
        }
        let name = String(decoding: bytes, as: UTF8.self)
        if name.hasPrefix("json:") || name.contains("://") { return .success(nil) }
        return .success(name.hasPrefix("/") ? name : Paths.directory(of: path) + "/" + name)
    }
}
