import Foundation
import LabCore
import Platform

/// Builds sysfs, procfs and devfs trees under a temporary directory, laid out
/// as the kernel lays them out (relative symlinks included), so host checks can
/// run against them instead of this machine's /sys. It can also play the
/// kernel's part for the writes vfio binding makes (`kernel(_:)`).
///
/// Reusable: the nested bench builds its expectations with it, and the same
/// checks then run against an L1 guest's real /sys.
final class SysfsTreeBuilder {
    let base: String
    let roots: HostRoots

    /// A PCI function to add. Defaults describe a conventional PCI card with INTA, unbound.
    struct Function {
        var address: PCIAddress
        var vendor: UInt16
        var device: UInt16
        var classCode: UInt32 = 0x010000
        var revision: UInt8 = 0
        var subsystemVendor: UInt16 = 0
        var subsystemDevice: UInt16 = 0
        var command: UInt16 = 0x0007
        var status: UInt16 = 0x0200
        /// Capability ids placed on the list from 0x40 (0x10 = PCI Express).
        var capabilities: [UInt8] = []
        var interruptPin: UInt8 = 1
        var irq: Int = 0
        /// Config 0x3C; defaults to `irq` (differs while a host driver uses MSI).
        var interruptLine: UInt8? = nil
        var driver: String? = nil
        var group: Int? = nil
        /// `nil`: no reset_method file and no reset file.
        var resetMethod: String? = nil
        var rom: (start: UInt64, size: UInt64)? = nil
        var enable: Int = 0
        var bootVGA: Bool = false
        /// For bridges: the secondary bus number (makes header type 1).
        var secondaryBus: UInt8? = nil

        var isBridge: Bool { secondaryBus != nil }
    }

    /// Sysfs-relative device directories by address.
    private(set) var devicePaths: [PCIAddress: String] = [:]
    /// What `drivers_probe` binds when no driver_override is set.
    var nativeDrivers: [PCIAddress: String] = [:]

    init() throws {
        var template = Array((NSTemporaryDirectory() + "/qlab-sysfs-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw CocoaError(.fileWriteUnknown) }
        base = String(cString: made)
        roots = HostRoots(under: base)
        for dir in ["sys/bus/pci/devices", "sys/bus/pci/drivers", "sys/kernel/iommu_groups", "sys/class/iommu",
                    "sys/class/net", "sys/class/block", "sys/class/tty", "sys/module", "sys/devices", "proc/self", "proc/net", "dev"] {
            try makeDirectory(base + "/" + dir)
        }
        try write("sys/bus/pci/drivers_probe", "")
        try write("sys/bus/pci/rescan", "")
        try write("proc/cmdline", "BOOT_IMAGE=/vmlinuz-6.1.0-13-amd64 root=/dev/sda1 ro quiet\n")
        try write("proc/mounts", "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\nsysfs /sys sysfs rw 0 0\n")
        try write("proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n")
        try write("proc/net/route", "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n")
        try setMemlock(8 << 20)
        try setCapEff(0)
        try setInterrupts([])
    }

    /// Removes the tree, unless QLAB_KEEP_SYSFS_TREE is set (to run `qlab doctor --sysfs` on it by hand).
    deinit {
        if let keep = getenv("QLAB_KEEP_SYSFS_TREE"), keep.pointee != 0 {
            FileHandle.standardError.write(Data("kept sysfs tree: \(base)\n".utf8))
            return
        }
        try? FileManager.default.removeItem(atPath: base)
    }

    // MARK: - Files

    func path(_ relative: String) -> String { base + "/" + relative }

    func write(_ relative: String, _ text: String) throws {
        try write(relative, bytes: Array(text.utf8))
    }

    func write(_ relative: String, bytes: [UInt8]) throws {
        let full = path(relative)
        try makeDirectory((full as NSString).deletingLastPathComponent)
        try Data(bytes).write(to: URL(fileURLWithPath: full))
    }

    func read(_ relative: String) -> String? {
        (try? Data(contentsOf: URL(fileURLWithPath: path(relative)))).map { String(decoding: $0, as: UTF8.self) }
    }

    func readBytes(_ relative: String) -> [UInt8]? {
        (try? Data(contentsOf: URL(fileURLWithPath: path(relative)))).map { [UInt8]($0) }
    }

    func link(_ relative: String, to target: String) throws {
        let full = path(relative)
        try makeDirectory((full as NSString).deletingLastPathComponent)
        try? FileManager.default.removeItem(atPath: full)
        try FileManager.default.createSymbolicLink(atPath: full, withDestinationPath: target)
    }

    func remove(_ relative: String) {
        try? FileManager.default.removeItem(atPath: path(relative))
    }

    func exists(_ relative: String) -> Bool {
        var info = stat()
        return lstat(path(relative), &info) == 0
    }

    private func makeDirectory(_ full: String) throws {
        try FileManager.default.createDirectory(atPath: full, withIntermediateDirectories: true)
    }

    /// `../` enough times to climb from `relative` (a directory under sys/) to sys/.
    private func up(_ relative: String) -> String {
        String(repeating: "../", count: relative.split(separator: "/").count)
    }

    private func hex(_ value: UInt64, _ width: Int) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    // MARK: - PCI

    /// Adds a function below `parent` (a bridge or root port already added), or on
    /// the root bus `pci0000:00` when `parent` is nil. Returns its sysfs-relative directory.
    @discardableResult
    func add(_ function: Function, parent: PCIAddress? = nil) throws -> String {
        let domainDir = "devices/pci\(String(format: "%04x", function.address.domain)):\(String(format: "%02x", function.address.bus))"
        let parentDir = parent.map { devicePaths[$0]! } ?? rootBusDirectory(function.address, fallback: domainDir)
        let dir = parentDir + "/" + function.address.description
        devicePaths[function.address] = dir
        let sysDir = "sys/" + dir
        try write(sysDir + "/vendor", hex(UInt64(function.vendor), 4) + "\n")
        try write(sysDir + "/device", hex(UInt64(function.device), 4) + "\n")
        try write(sysDir + "/class", hex(UInt64(function.classCode), 6) + "\n")
        try write(sysDir + "/revision", hex(UInt64(function.revision), 2) + "\n")
        try write(sysDir + "/subsystem_vendor", hex(UInt64(function.subsystemVendor), 4) + "\n")
        try write(sysDir + "/subsystem_device", hex(UInt64(function.subsystemDevice), 4) + "\n")
        try write(sysDir + "/irq", "\(function.irq)\n")
        try write(sysDir + "/enable", "\(function.enable)\n")
        try write(sysDir + "/driver_override", "(null)\n")
        try write(sysDir + "/config", bytes: configSpace(function))
        var resource = Array(repeating: "0x0000000000000000 0x0000000000000000 0x0000000000000000", count: 13)
        if let rom = function.rom {
            resource[6] = "\(hex(rom.start, 16)) \(hex(rom.start == 0 ? rom.size - 1 : rom.start + rom.size - 1, 16)) 0x0000000000046200"
            try write(sysDir + "/rom", "")
        }
        try write(sysDir + "/resource", resource.joined(separator: "\n") + "\n")
        if let method = function.resetMethod {
            try write(sysDir + "/reset_method", method + "\n")
            if !method.isEmpty { try write(sysDir + "/reset", "") }
        }
        if function.bootVGA { try write(sysDir + "/boot_vga", "1\n") }
        try link("sys/bus/pci/devices/\(function.address)", to: "../../../" + dir)
        if let group = function.group { try setGroup(function.address, group) }
        if let driver = function.driver {
            try bind(function.address, to: driver)
            if driver != "vfio-pci" { nativeDrivers[function.address] = driver }
        }
        return dir
    }

    /// The root bus directory for a function with no parent: `devices/pci0000:00`.
    private func rootBusDirectory(_ address: PCIAddress, fallback: String) -> String { fallback }

    func configSpace(_ f: Function) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 256)
        func put16(_ offset: Int, _ value: UInt16) {
            bytes[offset] = UInt8(value & 0xFF)
            bytes[offset + 1] = UInt8(value >> 8)
        }
        put16(0x00, f.vendor)
        put16(0x02, f.device)
        put16(0x04, f.command)
        var status = f.status
        if !f.capabilities.isEmpty { status |= 1 << 4 }
        put16(0x06, status)
        bytes[0x08] = f.revision
        bytes[0x09] = UInt8(f.classCode & 0xFF)
        bytes[0x0A] = UInt8((f.classCode >> 8) & 0xFF)
        bytes[0x0B] = UInt8((f.classCode >> 16) & 0xFF)
        if let secondary = f.secondaryBus {
            bytes[0x0E] = 1
            bytes[0x18] = f.address.bus
            bytes[0x19] = secondary
            bytes[0x1A] = secondary
        } else {
            put16(0x2C, f.subsystemVendor)
            put16(0x2E, f.subsystemDevice)
        }
        if !f.capabilities.isEmpty {
            bytes[0x34] = 0x40
            for (index, id) in f.capabilities.enumerated() {
                let offset = 0x40 + index * 0x10
                bytes[offset] = id
                bytes[offset + 1] = index + 1 < f.capabilities.count ? UInt8(offset + 0x10) : 0
            }
        }
        bytes[0x3C] = f.interruptLine ?? UInt8(truncatingIfNeeded: f.irq)
        bytes[0x3D] = f.interruptPin
        return bytes
    }

    var builtInDrivers: Set<String> = ["pcieport", "pci-stub"]

    /// Makes sure `bus/pci/drivers/NAME` exists with its bind, unbind and new_id files.
    func addDriver(_ name: String) throws {
        let dir = "sys/bus/pci/drivers/\(name)"
        if exists(dir) { return }
        for file in ["bind", "unbind", "new_id", "remove_id", "uevent"] { try write(dir + "/" + file, "") }
        // Drivers in modules link to them (ehci-pci -> module/ehci_pci); pcieport is built in.
        if !builtInDrivers.contains(name) {
            let module = name.replacingOccurrences(of: "-", with: "_")
            try write("sys/module/\(module)/refcnt", "1\n")
            try link(dir + "/module", to: "../../../../module/\(module)")
        }
        if name == "vfio-pci" {
            try write("sys/module/vfio_pci/parameters/nointxmask", "N\n")
        }
    }

    /// Links the function to a driver (both directions), as a probe does; `nil` unbinds.
    func bind(_ address: PCIAddress, to driver: String?) throws {
        let dir = devicePaths[address]!
        if let current = HostFiles.linkName(path("sys/" + dir + "/driver")) {
            remove("sys/bus/pci/drivers/\(current)/\(address)")
            remove("sys/" + dir + "/driver")
        }
        guard let driver else { return }
        try addDriver(driver)
        try link("sys/" + dir + "/driver", to: up(dir) + "bus/pci/drivers/\(driver)")
        try link("sys/bus/pci/drivers/\(driver)/\(address)", to: "../../../../" + dir)
        if driver == "vfio-pci", let group = HostFiles.linkName(path("sys/" + dir + "/iommu_group")) {
            try write("dev/vfio/\(group)", "")
        }
    }

    func setGroup(_ address: PCIAddress, _ group: Int) throws {
        let dir = devicePaths[address]!
        try makeDirectory(path("sys/kernel/iommu_groups/\(group)/devices"))
        try write("sys/kernel/iommu_groups/\(group)/type", "identity\n")
        try link("sys/" + dir + "/iommu_group", to: up(dir) + "kernel/iommu_groups/\(group)")
        try link("sys/kernel/iommu_groups/\(group)/devices/\(address)", to: "../../../../" + dir)
    }

    func driver(_ address: PCIAddress) -> String? {
        HostFiles.linkName(path("sys/" + devicePaths[address]! + "/driver"))
    }

    func driverOverride(_ address: PCIAddress) -> String? {
        read("sys/" + devicePaths[address]! + "/driver_override")
    }

    // MARK: - Host state

    /// An IOMMU unit in class/iommu (dmar0 for Intel).
    func addIOMMUUnit(_ name: String = "dmar0") throws {
        try write("sys/devices/virtual/iommu/\(name)/uevent", "")
        try link("sys/class/iommu/\(name)", to: "../../devices/virtual/iommu/\(name)")
    }

    /// vfio, vfio_iommu_type1 and vfio-pci loaded, /dev/vfio/vfio present.
    func loadVFIO(noINTxMask: Bool = false) throws {
        try addDriver("vfio-pci")
        try write("sys/module/vfio_pci/parameters/nointxmask", noINTxMask ? "Y\n" : "N\n")
        try write("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", "N\n")
        try write("sys/module/vfio/parameters/enable_unsafe_noiommu_mode", "N\n")
        try write("dev/vfio/vfio", "")
    }

    func setCommandLine(_ line: String) throws { try write("proc/cmdline", line + "\n") }

    /// /proc/self/limits with the memlock soft and hard limit (`nil` = unlimited).
    func setMemlock(_ bytes: UInt64?) throws {
        let value = bytes.map(String.init) ?? "unlimited"
        func row(_ name: String, _ soft: String, _ hard: String, _ unit: String) -> String {
            name.padding(toLength: 26, withPad: " ", startingAt: 0) + soft.padding(toLength: 21, withPad: " ", startingAt: 0)
                + hard.padding(toLength: 21, withPad: " ", startingAt: 0) + unit + "\n"
        }
        try write("proc/self/limits", row("Limit", "Soft Limit", "Hard Limit", "Units     ")
            + row("Max cpu time", "unlimited", "unlimited", "seconds   ")
            + row("Max locked memory", value, value, "bytes     ")
            + row("Max open files", "1024", "524288", "files     "))
    }

    func setCapEff(_ mask: UInt64) throws {
        try write("proc/self/status", "Name:\tqlab\nUmask:\t0022\nState:\tR (running)\nCapInh:\t0000000000000000\nCapPrm:\t\(String(format: "%016llx", mask))\nCapEff:\t\(String(format: "%016llx", mask))\n")
    }

    /// One /proc/interrupts row: IRQ number, chip, hardware irq + flow, handlers.
    struct InterruptRow {
        var irq: Int
        var chip = "IO-APIC"
        var flow = "fasteoi"
        var handlers: [String]
        var counts: [UInt64] = [0, 0]
    }

    /// Writes /proc/interrupts as kernel/irq/proc.c prints it for two CPUs, with the
    /// timer and an NMI row around the given rows.
    func setInterrupts(_ rows: [InterruptRow]) throws {
        func field(_ text: String, _ width: Int) -> String {
            String(repeating: " ", count: max(0, width - text.count)) + text
        }
        var text = "           CPU0       CPU1       \n"
        let all = [InterruptRow(irq: 0, flow: "edge", handlers: ["timer"], counts: [35, 0])] + rows.sorted { $0.irq < $1.irq }
        for row in all {
            text += field("\(row.irq)", 3) + ":" + row.counts.map { " " + field("\($0)", 10) }.joined()
            text += " " + field(row.chip, 8) + " " + field("\(row.irq)", 2) + "-" + row.flow
                + String(repeating: " ", count: max(1, 9 - row.flow.count)) + " " + row.handlers.joined(separator: ", ") + "\n"
        }
        text += "NMI:          0          0   Non-maskable interrupts\nLOC:     123456     654321   Local timer interrupts\nERR:          0\nMIS:          0\n"
        try write("proc/interrupts", text)
    }

    func setMounts(_ lines: [String]) throws {
        try write("proc/mounts", "proc /proc proc rw 0 0\nsysfs /sys sysfs rw 0 0\n" + lines.map { $0 + "\n" }.joined())
    }

    /// A SCSI disk with partitions below a PCI function: class/block/NAME links and /dev/NAME nodes.
    func addDisk(_ name: String, partitions: Int, below address: PCIAddress) throws {
        let dir = devicePaths[address]! + "/host0/target0:0:0/0:0:0:0/block/\(name)"
        try write("sys/" + dir + "/dev", "8:0\n")
        try link("sys/class/block/\(name)", to: "../../" + dir)
        try write("dev/\(name)", "")
        for index in 1...max(1, partitions) where partitions > 0 {
            try write("sys/" + dir + "/\(name)\(index)/partition", "\(index)\n")
            try link("sys/class/block/\(name)\(index)", to: "../../" + dir + "/\(name)\(index)")
            try write("dev/\(name)\(index)", "")
        }
    }

    /// A network interface of a PCI function; `defaultRoute` adds it to /proc/net/route.
    func addNetworkInterface(_ name: String, below address: PCIAddress, defaultRoute: Bool) throws {
        let dir = devicePaths[address]! + "/net/\(name)"
        try write("sys/" + dir + "/address", "52:54:00:12:34:56\n")
        try link("sys/" + dir + "/device", to: "../../../\(address)")
        try link("sys/class/net/\(name)", to: "../../" + dir)
        if defaultRoute {
            let route = read("proc/net/route") ?? ""
            try write("proc/net/route", route + "\(name)\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
        }
    }

    // MARK: - Playing the kernel

    /// Acts on a write as the kernel would: driver_override, unbind, drivers_probe, bind.
    /// Install with `writer.kernel = tree.kernel`.
    func kernel(_ write: SysfsWriter.Write) throws {
        let sys = path("sys") + "/"
        guard write.path.hasPrefix(sys), write.offset == nil else { return }
        let relative = String(write.path.dropFirst(sys.count))
        let text = write.text.trimmingCharacters(in: .whitespacesAndNewlines)
        let parts = relative.split(separator: "/").map(String.init)
        if relative.hasSuffix("/driver_override"), parts.count >= 5, let address = PCIAddress(parts[3]) {
            try self.write("sys/" + devicePaths[address]! + "/driver_override", text.isEmpty ? "(null)\n" : text + "\n")
        } else if relative.hasSuffix("/unbind"), let address = PCIAddress(text) {
            try bind(address, to: nil)
        } else if relative == "bus/pci/drivers_probe", let address = PCIAddress(text) {
            guard driver(address) == nil else { return }
            let override = driverOverride(address)?.trimmingCharacters(in: .whitespacesAndNewlines)
            if let override, override != "(null)" {
                if exists("sys/bus/pci/drivers/\(override)") { try bind(address, to: override) }
            } else if let native = nativeDrivers[address] {
                try bind(address, to: native)
            }
        } else if relative.hasPrefix("bus/pci/drivers/"), relative.hasSuffix("/bind"), let address = PCIAddress(text) {
            try bind(address, to: parts[3])
        }
    }
}

extension PCIAddress {
    /// For tests: `PCIAddress("0000:03:04.0")!` without the noise.
    static func bdf(_ text: String) -> PCIAddress { PCIAddress(text)! }
}
