/// A named device qlab attaches to the lab's machine. Its name is its QEMU
/// device id, so QMP output (query-pci, DEVICE_DELETED) reads in the lab's terms.
public struct LabDevice: Sendable, Hashable {
    public var name: String
    public var kind: Kind
    public var attach: Attach
    /// Explicit placement; nil lets qlab choose (see ``DevicePlacement``).
    public var bus: String?
    public var addr: PCISlotAddress?
    /// Extra `-device` properties, passed through (e.g. `x-no-kvm-intx: on`).
    public var properties: [DeviceProperty]
    /// Where the device is in the lab file (for errors found after loading).
    public var location: SourceLocation
    /// `hooks:` of the device: run around the entries whose guest has it.
    public var hooks: DeviceHooks?

    public enum Kind: Sendable, Hashable {
        case passthrough(Passthrough)
        case emulated(EmulatedController)
    }

    public init(
        name: String, kind: Kind, attach: Attach = .boot, bus: String? = nil, addr: PCISlotAddress? = nil,
        properties: [DeviceProperty] = [], location: SourceLocation = SourceLocation(file: "")
    ) {
        self.name = name
        self.kind = kind
        self.attach = attach
        self.bus = bus
        self.addr = addr
        self.properties = properties
        self.location = location
    }

    public var isPassthrough: Bool {
        if case .passthrough = kind { return true }
        return false
    }

    public var passthrough: Passthrough? {
        if case .passthrough(let p) = kind { return p }
        return nil
    }

    /// True for an emulated controller with a host SCSI device on it (`host: /dev/sgN`):
    /// like a passed-through card, it serves one guest at a time and its state is not in a snapshot.
    public var hasHostSCSIDevice: Bool { emulated?.disks.contains { $0.host != nil } ?? false }

    public var emulated: EmulatedController? {
        if case .emulated(let e) = kind { return e }
        return nil
    }
}

/// A host PCI device given to the guest with vfio-pci.
public struct Passthrough: Sendable, Hashable {
    public var host: HostSelector
    /// false: `rombar=0`, the guest sees no option ROM (unreadable ROMs, or to skip the card's BIOS).
    public var rombar: Bool?
    /// An option ROM image to show instead of the card's own.
    public var romfile: String?

    public init(host: HostSelector, rombar: Bool? = nil, romfile: String? = nil) {
        self.host = host
        self.rombar = rombar
        self.romfile = romfile
    }

    /// How the lab names the host device.
    public enum HostSelector: Sendable, Hashable, CustomStringConvertible {
        /// `host: "0000:03:05.0"`.
        case address(PCIAddress)
        /// `ids: "9004:5078"`: the first such device on the host, in address order.
        case ids(vendor: UInt16, device: UInt16)

        public var description: String {
            switch self {
            case .address(let address): return address.description
            case .ids(let vendor, let device): return Self.hex4(vendor) + ":" + Self.hex4(device)
            }
        }

        static func hex4(_ value: UInt16) -> String {
            let digits = String(value, radix: 16)
            return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
        }
    }
}

/// An emulated PCI controller (a SCSI HBA standing in for the real card) with its disks.
public struct EmulatedController: Sendable, Hashable {
    /// The QEMU device model, e.g. `am53c974`, `lsi53c895a`.
    public var driver: String
    public var disks: [EmulatedDisk]

    public init(driver: String, disks: [EmulatedDisk] = []) {
        self.driver = driver
        self.disks = disks
    }

    /// QEMU's emulated SCSI controllers a lab may name, with what they are.
    public static let knownDrivers: [(driver: String, description: String)] = [
        ("am53c974", "AMD Am53C974 PCscsi (the Tekram DC-390's chip); Linux am53c974"),
        ("dc390", "Tekram DC-390 (Am53C974 with its EEPROM); Linux am53c974"),
        ("lsi53c895a", "LSI53C895A Ultra2 SCSI; Linux sym53c8xx"),
        ("lsi53c810", "LSI53C810 Fast SCSI; Linux sym53c8xx"),
        ("megasas", "LSI MegaRAID SAS 1078; Linux megaraid_sas"),
        ("megasas-gen2", "LSI MegaRAID SAS 2108; Linux megaraid_sas"),
        ("mptsas1068", "LSI SAS1068 Fusion-MPT; Linux mptsas"),
        ("pvscsi", "VMware paravirtual SCSI; Linux vmw_pvscsi"),
        ("virtio-scsi-pci", "virtio SCSI; Linux virtio_scsi"),
    ]

    /// The SCSI ids and LUNs a disk may have on each controller: QEMU's bus
    /// limits (`max_target`, `max_lun`, checked against QEMU 7.2 and 10.0),
    /// less id 7 on the narrow parallel buses, which is the controller's own
    /// (initiator) id there: Linux never scans it, so a disk at 7 is never seen.
    public static func busLimits(of driver: String) -> (ids: ClosedRange<Int>, luns: ClosedRange<Int>) {
        switch driver {
        case "am53c974", "dc390": return (0...6, 0...7)
        case "lsi53c895a", "lsi53c810": return (0...6, 0...0)
        case "megasas", "megasas-gen2": return (0...64, 0...255)
        case "mptsas1068": return (0...8, 0...1)
        case "pvscsi": return (0...64, 0...0)
        default: return (0...255, 0...16383)
        }
    }
}

/// A disk on an emulated controller: a `scsi-hd` on the controller's bus,
/// a `scsi-cd` (`type: cdrom`), or a host SCSI device given to the
/// controller (`host: /dev/sgN`: `scsi-generic`; a block device: `scsi-block`).
/// Its target shape (SCSI id, LUN, INQUIRY strings, block size) is what the
/// guest sees (``EmulatedDisk/Shape``).
public struct EmulatedDisk: Sendable, Hashable {
    /// The base image, absolute; never written (qlab attaches an overlay). Empty for a host device.
    public var image: String
    /// `qcow2` or `raw`.
    public var format: String
    /// True for a CD-ROM too (its image is opened read-only, no overlay).
    public var readonly: Bool
    /// The disk's QEMU id; node names are `<id>-fmt` and `<id>-file`.
    public var id: String
    public var type: DiskType = .disk
    /// A host SCSI device (absolute path, `/dev/sgN` or a block device) instead of an image.
    public var host: String?
    /// True when `host` was a block device when the lab file was read (`scsi-block`; else `scsi-generic`).
    public var hostIsBlockDevice = false
    public var shape = Shape()

    public enum DiskType: String, Sendable, Hashable, CaseIterable {
        /// A hard disk (`scsi-hd`, peripheral type 0).
        case disk
        /// A CD-ROM (`scsi-cd`, peripheral type 5), read-only, 2048-byte blocks.
        case cdrom
    }

    /// What the guest sees of the target: where it is on the bus and what its INQUIRY says.
    /// nil: QEMU's default (an id QEMU picks, LUN 0, "QEMU", "QEMU HARDDISK", QEMU's version, 512-byte blocks).
    public struct Shape: Sendable, Hashable {
        public var scsiID: Int?
        public var lun: Int?
        /// INQUIRY vendor (at most 8 ASCII characters).
        public var vendor: String?
        /// INQUIRY product (at most 16).
        public var product: String?
        /// INQUIRY product revision (at most 4; QEMU's `ver`).
        public var revision: String?
        /// The unit serial number (VPD page 0x80; at most 36).
        public var serial: String?
        /// Logical and physical block size: 512, 1024, 2048 or 4096.
        public var blockSize: Int?

        public init(scsiID: Int? = nil, lun: Int? = nil, vendor: String? = nil, product: String? = nil, revision: String? = nil,
                    serial: String? = nil, blockSize: Int? = nil) {
            self.scsiID = scsiID
            self.lun = lun
            self.vendor = vendor
            self.product = product
            self.revision = revision
            self.serial = serial
            self.blockSize = blockSize
        }
    }

    public init(image: String, format: String, readonly: Bool = false, id: String, type: DiskType = .disk, host: String? = nil, shape: Shape = Shape()) {
        self.image = image
        self.format = format
        self.readonly = readonly || type == .cdrom
        self.id = id
        self.type = type
        self.host = host
        self.shape = shape
    }

    /// True when runs write to an overlay over the image (a writable image disk).
    public var usesOverlay: Bool { !readonly && host == nil }

    /// The QEMU device model: `scsi-hd`, `scsi-cd`, or for a host device
    /// `scsi-generic` (a character device, `/dev/sgN`) or `scsi-block` (a block device).
    public var qemuDriver: String {
        if host != nil { return hostIsBlockDevice ? "scsi-block" : "scsi-generic" }
        return type == .cdrom ? "scsi-cd" : "scsi-hd"
    }

    /// The format node's name (what the disk's `drive=` names).
    public var formatNodeName: String { id + "-fmt" }
    /// The protocol (file) node's name; a host device's only node.
    public var fileNodeName: String { id + "-file" }
}

/// An extra `-device` property from the lab file.
public struct DeviceProperty: Sendable, Hashable {
    public var name: String
    public var value: QEMUValue

    public init(_ name: String, _ value: QEMUValue) {
        self.name = name
        self.value = value
    }
}

/// A PCI slot and function on a bus, as QEMU's `addr=` reads it (hex: `0x5`, `05.1`).
public struct PCISlotAddress: Sendable, Hashable, CustomStringConvertible {
    public var slot: UInt8
    public var function: UInt8

    public init(slot: UInt8, function: UInt8 = 0) {
        self.slot = slot
        self.function = function
    }

    /// Parses QEMU's spelling: hex slot, optional `.function`, optional `0x` prefixes.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else { return nil }
        func hex(_ s: Substring) -> UInt8? {
            var digits = s
            if digits.hasPrefix("0x") || digits.hasPrefix("0X") { digits = digits.dropFirst(2) }
            guard !digits.isEmpty, digits.count <= 2 else { return nil }
            return UInt8(digits, radix: 16)
        }
        guard let slot = hex(parts[0]), slot < 32 else { return nil }
        var function: UInt8 = 0
        if parts.count == 2 {
            guard let f = hex(parts[1]), f < 8 else { return nil }
            function = f
        }
        self.init(slot: slot, function: function)
    }

    /// `0x5` or `0x5.0x1`, as `addr=` takes it.
    public var description: String {
        "0x" + String(slot, radix: 16) + (function == 0 ? "" : ".0x" + String(function, radix: 16))
    }
}

/// A place in a lab file.
public struct SourceLocation: Sendable, Hashable {
    public var file: String
    public var line: Int?
    public var column: Int?
    public var keyPath: String

    public init(file: String, line: Int? = nil, column: Int? = nil, keyPath: String = "") {
        self.file = file
        self.line = line
        self.column = column
        self.keyPath = keyPath
    }

    public func error(_ message: String, keyPath: String? = nil) -> LabFileError {
        LabFileError(file: file, line: line, column: column, keyPath: keyPath ?? self.keyPath, message: message)
    }
}
