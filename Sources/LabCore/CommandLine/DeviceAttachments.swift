import Platform

/// Why a QEMU command line or a device attachment could not be built.
public enum QEMUCommandLineError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A problem in the lab file (placement, unknown guest or device).
    case lab(LabFileError)
    /// A problem with the runtime context or the host (socket path too long, no such host device).
    case runtime(String)

    public var description: String {
        switch self {
        case .lab(let error): return error.description
        case .runtime(let message): return message
        }
    }
}

extension Lab {
    /// The block nodes and devices that attach `device` when the lab runs
    /// `guest`: the `-device`/`-blockdev` arguments at boot, and the
    /// `blockdev-add`/`device_add` arguments for hotplug, placed by the same plan.
    ///
    /// - Parameters:
    ///   - diskOverlays: overlay paths by disk id; a disk without one is
    ///     opened read-only on its base image.
    ///   - rombar: how this QEMU spells `rombar` (``RombarSpelling/probe(qemu:)``).
    public func attachment(
        of deviceName: String, for guest: LabGuest, diskOverlays: [String: String] = [:], sysfsRoot: String = "/sys",
        rombar: RombarSpelling = .number
    ) throws(QEMUCommandLineError) -> DeviceAttachment {
        guard let device = device(named: deviceName) else {
            var message = "no device '\(deviceName)' in this lab"
            if let close = Suggestion.closest(to: deviceName, in: devices.map(\.name)) { message += "; did you mean '\(close)'?" }
            throw .lab(LabFileError(file: file, keyPath: "devices", message: message))
        }
        let plan: PlacementPlan
        do { plan = try placement(for: guest) } catch { throw .lab(error) }
        guard let placement = plan.placement(of: device.name) else {
            throw .runtime("internal: no placement for \(device.name)")
        }
        return try device.attachment(placement: placement, diskOverlays: diskOverlays, sysfsRoot: sysfsRoot, rombar: rombar)
    }
}

extension LabDevice {
    /// See ``Lab/attachment(of:for:diskOverlays:sysfsRoot:rombar:)``.
    public func attachment(
        placement: PCIPlacement, diskOverlays: [String: String], sysfsRoot: String, rombar spelling: RombarSpelling = .number
    ) throws(QEMUCommandLineError) -> DeviceAttachment {
        switch kind {
        case .passthrough(let passthrough):
            let host = try passthrough.host.resolve(sysfsRoot: sysfsRoot)
            var properties: [(String, QEMUValue)] = [("host", .string(host.description))] + placement.properties
            if let rombar = passthrough.rombar { properties.append(("rombar", spelling.value(rombar))) }
            if let romfile = passthrough.romfile { properties.append(("romfile", .string(romfile))) }
            properties += self.properties.map { ($0.name, $0.value) }
            return DeviceAttachment(blockdevs: [], devices: [QEMUDeviceSpec(driver: "vfio-pci", id: name, properties: properties)])
        case .emulated(let controller):
            var blockdevs: [QEMUBlockdevSpec] = []
            var devices = [
                QEMUDeviceSpec(driver: controller.driver, id: name, properties: placement.properties + self.properties.map { ($0.name, $0.value) })
            ]
            for disk in controller.disks {
                if let host = disk.host {
                    // A host SCSI device: one host_device node, given to scsi-generic/scsi-block as it is.
                    blockdevs.append(QEMUBlockdevSpec(nodeName: disk.fileNodeName, driver: "host_device", properties: [("filename", .string(host))]))
                } else if let overlay = diskOverlays[disk.id], disk.usesOverlay {
                    blockdevs.append(.file(overlay, nodeName: disk.fileNodeName))
                    blockdevs.append(.format("qcow2", over: disk.fileNodeName, nodeName: disk.formatNodeName))
                } else {
                    blockdevs.append(.file(disk.image, nodeName: disk.fileNodeName, readOnly: true))
                    blockdevs.append(.format(disk.format, over: disk.fileNodeName, nodeName: disk.formatNodeName, readOnly: true))
                }
                devices.append(QEMUDeviceSpec(driver: disk.qemuDriver, id: disk.id, properties: disk.deviceProperties(bus: name + ".0")))
            }
            return DeviceAttachment(blockdevs: blockdevs, devices: devices)
        }
    }
}

extension EmulatedDisk {
    /// The disk's `-device` properties: its node, its bus, then its shape
    /// (`scsi-id`, `lun`, `vendor`, `product`, `ver`, `serial`, block sizes) where the lab gives one.
    func deviceProperties(bus: String) -> [(String, QEMUValue)] {
        var properties: [(String, QEMUValue)] = [("drive", .string(host != nil ? fileNodeName : formatNodeName)), ("bus", .string(bus))]
        if let id = shape.scsiID { properties.append(("scsi-id", .int(Int64(id)))) }
        if let lun = shape.lun { properties.append(("lun", .int(Int64(lun)))) }
        if let vendor = shape.vendor { properties.append(("vendor", .string(vendor))) }
        if let product = shape.product { properties.append(("product", .string(product))) }
        if let revision = shape.revision { properties.append(("ver", .string(revision))) }
        if let serial = shape.serial { properties.append(("serial", .string(serial))) }
        if let size = shape.blockSize {
            properties.append(("logical_block_size", .int(Int64(size))))
            properties.append(("physical_block_size", .int(Int64(size))))
        }
        return properties
    }
}

extension Passthrough.HostSelector {
    /// The host address: as given, or the first device with these ids under
    /// `SYSFS/bus/pci/devices` (address order).
    public func resolve(sysfsRoot: String = "/sys") throws(QEMUCommandLineError) -> PCIAddress {
        switch self {
        case .address(let address):
            return address
        case .ids(let vendor, let device):
            let directory = sysfsRoot + "/bus/pci/devices"
            guard let names = HostFiles.list(directory) else {
                throw .runtime("cannot list \(directory) to find PCI device \(self): \(Errno.current)")
            }
            var matches: [PCIAddress] = []
            for name in names {
                guard let address = PCIAddress(name) else { continue }
                let base = directory + "/" + name
                if Self.readHex(base + "/vendor") == vendor, Self.readHex(base + "/device") == device {
                    matches.append(address)
                }
            }
            guard let first = matches.min() else {
                throw .runtime("no PCI device \(self) on this host (looked in \(directory)); check `lspci -nn`, or name the card by host: address")
            }
            return first
        }
    }

    static func readHex(_ path: String) -> UInt16? {
        guard let bytes = LabPaths.readPrefix(path, count: 16) else { return nil }
        var text = String(decoding: bytes, as: UTF8.self).trimmingSpaces()
        if text.hasPrefix("0x") { text.removeFirst(2) }
        return UInt16(text, radix: 16)
    }
}

extension QEMUCommandLineError: ExitStatusCarrying {
    /// 2 for the lab file, 1 for the host or runtime context.
    public var exitStatus: ExitStatus {
        switch self {
        case .lab: return .usage
        case .runtime: return .failed
        }
    }
}
