import Platform

/// What on the host a PCI device is carrying that unbinding it would take
/// away: a mounted filesystem, the console, the default route's interface.
public struct DeviceUsage {
    public var roots: HostRoots
    var sysfs: Sysfs { Sysfs(roots: roots) }
    var procfs: Procfs { Procfs(roots: roots) }

    public init(roots: HostRoots) { self.roots = roots }

    /// Reasons not to take the device from the host; empty when it carries none of them.
    public func reasons(for device: PCIDevice) -> [String] {
        mountedFilesystems(device) + consoles(device) + defaultRouteInterfaces(device)
    }

    /// Whether a sysfs-relative device path lies at or below the PCI device's directory.
    func isUnder(_ relative: String?, _ device: PCIDevice) -> Bool {
        guard let relative else { return false }
        return relative == device.devicePath || relative.hasPrefix(device.devicePath + "/")
    }

    /// Mounts whose block device (through dm/md `slaves`) sits below the PCI device:
    /// /proc/mounts sources under /dev resolved to `class/block/NAME`.
    func mountedFilesystems(_ device: PCIDevice) -> [String] {
        var reasons: [String] = []
        for mount in procfs.mounts() where mount.source.hasPrefix("/dev/") {
            let devPath = roots.dev(String(mount.source.dropFirst("/dev/".count)))
            let resolved = HostFiles.realPath(devPath) ?? devPath
            let name = HostFiles.lastComponent(resolved)
            if blockDevice(name, isUnder: device, depth: 0) {
                reasons.append("\(mount.source) (block device \(name)) is mounted on \(mount.mountPoint)")
            }
        }
        return reasons
    }

    func blockDevice(_ name: String, isUnder device: PCIDevice, depth: Int) -> Bool {
        guard depth < 8 else { return false }
        if isUnder(sysfs.resolvedRelative("class/block/\(name)"), device) { return true }
        let slaves = HostFiles.list(roots.sys("class/block/\(name)/slaves")) ?? []
        return slaves.contains { blockDevice($0, isUnder: device, depth: depth + 1) }
    }

    /// The active consoles (`class/tty/console/active`, else `console=` on the command line):
    /// a serial port whose `device` link is below the PCI device, or a virtual terminal
    /// while the device is the boot VGA or drives a framebuffer.
    func consoles(_ device: PCIDevice) -> [String] {
        var names = (HostFiles.readValue(roots.sys("class/tty/console/active")) ?? "").split(separator: " ").map(String.init)
        if names.isEmpty {
            names = (procfs.kernelCommandLine() ?? []).filter { $0.hasPrefix("console=") }
                .map { String($0.dropFirst("console=".count).split(separator: ",").first ?? "") }
        }
        var reasons: [String] = []
        for name in names where !name.isEmpty {
            let isVirtualTerminal = name.hasPrefix("tty") && name.dropFirst(3).allSatisfy(\.isNumber)
            if isVirtualTerminal {
                let framebuffers = (HostFiles.list(roots.sys("class/graphics")) ?? []).filter {
                    isUnder(sysfs.resolvedRelative("class/graphics/\($0)/device"), device)
                }
                if device.isBootVGA || !framebuffers.isEmpty {
                    reasons.append("console \(name) is shown on this display device" + (framebuffers.isEmpty ? " (boot_vga)" : " (\(framebuffers.joined(separator: ", ")))"))
                }
            } else if isUnder(sysfs.resolvedRelative("class/tty/\(name)/device"), device) {
                reasons.append("console \(name) is on this device")
            }
        }
        return reasons
    }

    /// Interfaces of the default route (/proc/net/route) whose `class/net/IF/device` is this device.
    func defaultRouteInterfaces(_ device: PCIDevice) -> [String] {
        procfs.defaultRouteInterfaces().filter { isUnder(sysfs.resolvedRelative("class/net/\($0)/device"), device) }
            .map { "network interface \($0) carries the default route" }
    }
}
