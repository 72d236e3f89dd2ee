/// The directories the host checks read the kernel's files from.
///
/// On a running system these are `/sys`, `/proc` and `/dev`. Tests, and checks
/// of another machine's copied files (e.g. an L1 guest's /sys), point them at
/// a tree laid out exactly as the kernel lays it out, symlinks included.
public struct HostRoots: Sendable, Hashable {
    public var sysfs: String
    public var procfs: String
    public var devfs: String

    public init(sysfs: String = "/sys", procfs: String = "/proc", devfs: String = "/dev") {
        self.sysfs = Self.trimmed(sysfs)
        self.procfs = Self.trimmed(procfs)
        self.devfs = Self.trimmed(devfs)
    }

    /// The running kernel's own files.
    public static let live = HostRoots()

    /// All three roots below one directory: `DIR/sys`, `DIR/proc`, `DIR/dev`.
    public init(under directory: String) {
        let base = Self.trimmed(directory)
        self.init(sysfs: base + "/sys", procfs: base + "/proc", devfs: base + "/dev")
    }

    /// True when sysfs is the running kernel's `/sys`: the only tree the doctor
    /// may ever write to (the INTx masking probe), and only as root.
    public var sysfsIsLive: Bool { sysfs == "/sys" }

    public func sys(_ relative: String) -> String { join(sysfs, relative) }
    public func proc(_ relative: String) -> String { join(procfs, relative) }
    public func dev(_ relative: String) -> String { join(devfs, relative) }

    private func join(_ root: String, _ relative: String) -> String {
        relative.hasPrefix("/") ? root + relative : root + "/" + relative
    }

    private static func trimmed(_ path: String) -> String {
        var path = path
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        return path
    }
}
