import Platform

/// Reads the process and kernel files under a procfs root.
public struct Procfs: Sendable {
    public var roots: HostRoots

    public init(roots: HostRoots) { self.roots = roots }

    /// `cmdline`: the kernel command line's words.
    public func kernelCommandLine() -> [String]? {
        HostFiles.readValue(roots.proc("cmdline")).map { $0.split(separator: " ").map(String.init) }
    }

    /// The value of `name=value` on the kernel command line (last one wins, as for the kernel).
    public func kernelParameter(_ name: String) -> String? {
        kernelCommandLine()?.last { $0.hasPrefix(name + "=") }.map { String($0.dropFirst(name.count + 1)) }
    }

    /// The most memory the host can ever give a process: MemTotal + SwapTotal
    /// of `meminfo`, in bytes; nil when it cannot be read.
    public func memoryCeiling() -> UInt64? {
        guard let text = HostFiles.readText(roots.proc("meminfo")) else { return nil }
        var kibibytes: [String: UInt64] = [:]
        for row in text.split(separator: "\n") {
            let fields = row.split(separator: " ")
            guard fields.count >= 2, let value = UInt64(fields[1]) else { continue }
            kibibytes[String(fields[0].dropLast())] = value
        }
        guard let total = kibibytes["MemTotal"] else { return nil }
        return (total + (kibibytes["SwapTotal"] ?? 0)) << 10
    }

    /// `interrupts`.
    public func interrupts() -> InterruptTable? {
        HostFiles.readText(roots.proc("interrupts")).map(InterruptTable.init(parsing:))
    }

    public struct Mount: Sendable, Hashable {
        public var source: String
        public var mountPoint: String
        public var type: String
    }

    /// `mounts`: source, mount point and type of every mount (octal escapes decoded).
    public func mounts() -> [Mount] {
        guard let text = HostFiles.readText(roots.proc("mounts")) else { return [] }
        return text.split(separator: "\n").compactMap { row in
            let fields = row.split(separator: " ")
            guard fields.count >= 3 else { return nil }
            return Mount(source: Self.unescape(fields[0]), mountPoint: Self.unescape(fields[1]), type: String(fields[2]))
        }
    }

    /// The memlock limit of this process in bytes (`nil` = unlimited): the soft
    /// "Max locked memory" of `self/limits`, else `getrlimit(RLIMIT_MEMLOCK)`.
    public func memlockLimit() -> MemlockLimit {
        if let text = HostFiles.readText(roots.proc("self/limits")),
            let row = text.split(separator: "\n").first(where: { $0.hasPrefix("Max locked memory") })
        {
            let fields = row.dropFirst("Max locked memory".count).split(separator: " ")
            if let soft = fields.first {
                if soft == "unlimited" { return MemlockLimit(bytes: nil, source: "self/limits") }
                if let bytes = UInt64(soft) { return MemlockLimit(bytes: bytes, source: "self/limits") }
            }
        }
        if case .some(let bytes) = ThisProcess.lockedMemoryLimit {
            return MemlockLimit(bytes: bytes, source: "getrlimit")
        }
        return MemlockLimit(bytes: 0, source: "unknown")
    }

    public struct MemlockLimit: Sendable, Hashable {
        /// `nil` means unlimited.
        public var bytes: UInt64?
        /// Where it was read: `self/limits` or `getrlimit`.
        public var source: String
    }

    /// Whether this process has CAP_IPC_LOCK (bit 14 of `CapEff` in `self/status`),
    /// which lifts the memlock limit for vfio's pinning.
    public func hasIPCLock() -> Bool {
        guard let text = HostFiles.readText(roots.proc("self/status")),
            let row = text.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
            let mask = UInt64(row.dropFirst("CapEff:".count).hostTrimmed(), radix: 16)
        else { return false }
        return mask & (1 << 14) != 0
    }

    /// The CPU vendor from `cpuinfo` (`GenuineIntel`, `AuthenticAMD`, ...).
    public func cpuVendor() -> String? {
        guard let text = HostFiles.readText(roots.proc("cpuinfo")),
            let row = text.split(separator: "\n").first(where: { $0.hasPrefix("vendor_id") }),
            let colon = row.firstIndex(of: ":")
        else { return nil }
        return String(row[row.index(after: colon)...].hostTrimmed())
    }

    /// The interfaces carrying a default route, from `net/route` (destination 00000000, mask 00000000).
    public func defaultRouteInterfaces() -> [String] {
        guard let text = HostFiles.readText(roots.proc("net/route")) else { return [] }
        var names: [String] = []
        for row in text.split(separator: "\n").dropFirst() {
            let fields = row.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 8, fields[1] == "00000000", fields[7] == "00000000" else { continue }
            if !names.contains(String(fields[0])) { names.append(String(fields[0])) }
        }
        return names
    }

    /// Decodes the `\040`-style octal escapes the kernel uses in /proc/mounts.
    static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.first {
            if byte == UInt8(ascii: "\\"), utf8.count >= 4,
                let value = UInt8(String(decoding: utf8.dropFirst().prefix(3), as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                utf8 = utf8.dropFirst(4)
            } else {
                bytes.append(byte)
                utf8 = utf8.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
