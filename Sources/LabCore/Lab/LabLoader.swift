import Platform
import Yams

extension Lab {
    /// Reads and validates a lab file. Relative paths in it are resolved
    /// against the file's directory.
    ///
    /// - Parameter requireFiles: when true, a file the lab names that does not
    ///   exist is an error; when false it is recorded in ``missingFiles`` (so
    ///   `qlab args` can print a command line before the images are built).
    public static func load(path: String, requireFiles: Bool = false) throws(LabFileError) -> Lab {
        let file = Paths.absolute(path, relativeTo: Paths.currentDirectory())
        if let kind = LabPaths.unusableFileKind(file) {
            throw LabFileError(file: path, message: "is \(kind); give the lab's YAML file")
        }
        let text: String
        switch LabPaths.readText(file) {
        case .success(let t): text = t
        case .failure(let failure):
            throw LabFileError(file: path, message: "cannot read the lab file: \(failure.message)")
        }
        let lab = try parse(yaml: text, file: file, displayName: path)
        if requireFiles { try lab.checkFiles() }
        return lab
    }

    /// Parses lab YAML text as if read from `file` (absolute; relative paths resolve against its directory).
    /// `displayName` is how errors name the file (default: `file`).
    public static func parse(yaml text: String, file: String, displayName: String? = nil) throws(LabFileError) -> Lab {
        let shownName = displayName ?? file
        if let exceeded = YAMLSizeLimit.check(text) {
            throw LabFileError(file: shownName, line: exceeded.line, column: exceeded.column, message: exceeded.message)
        }
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw Self.syntaxError(error, file: shownName, text: text)
        } catch {
            throw LabFileError(file: shownName, message: "not valid YAML: \(error)")
        }
        guard let node, !YAMLReader.isNull(node) else {
            throw LabFileError(file: shownName, line: 1, column: 1, message: "the file is empty; a lab needs at least `name:` and `guests:` (see docs/lab-format.md)")
        }
        var loader = LabLoader(reader: YAMLReader(file: shownName), file: file)
        var lab = try loader.lab(YAMLReader.Field(node: node, path: "", keyNode: nil))
        lab.source = text
        return lab
    }

    /// Where a duplicated key appears the second time (Yams marks the mapping, not the key).
    static func secondOccurrence(of key: String, in text: String, from line: Int) -> (line: Int, column: Int)? {
        var seen = 0
        for (index, content) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where index + 1 >= line {
            var rest = Substring(content)
            var column = 1
            while let first = rest.first, first == " " || first == "-" || first == "{" || first == "," {
                rest = rest.dropFirst()
                column += 1
            }
            guard rest.hasPrefix(key), rest.dropFirst(key.count).drop(while: { $0 == " " }).first == ":" else { continue }
            seen += 1
            if seen == 2 { return (index + 1, column) }
        }
        return nil
    }

    /// What to do about the YAML syntax errors a lab file meets most: a tab
    /// (YAML indents with spaces only) and a plain value holding `: `
    /// (`ready: login:`), which YAML reads as a second mapping.
    static func syntaxHint(_ problem: String, text: String, line: Int, column: Int) -> String? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let content = lines.indices.contains(line - 1) ? lines[line - 1] : ""
        if problem.contains("cannot start any token"), content.contains("\t") {
            return "tabs are not allowed in YAML: indent with spaces"
        }
        if problem.contains("mapping values are not allowed") {
            return "a value containing ': ' or ending in ':' must be quoted, e.g. ready: \"login:\""
        }
        return nil
    }

    static func syntaxError(_ error: YamlError, file: String, text: String) -> LabFileError {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            let prefix = context.map { "\($0.text) " } ?? ""
            let hint = syntaxHint(problem, text: text, line: mark.line, column: mark.column).map { "; " + $0 } ?? ""
            return LabFileError(file: file, line: mark.line, column: mark.column, message: "YAML syntax: \(prefix)\(problem)\(hint)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            let mark = Self.secondOccurrence(of: duplicates.first ?? "", in: text, from: context.mark.line) ?? (context.mark.line, context.mark.column)
            return LabFileError(
                file: file, line: mark.line, column: mark.column,
                message: "duplicate key \(duplicates.map { "'\($0)'" }.joined(separator: ", ")) in one mapping; keep one")
        default:
            return LabFileError(file: file, message: "not valid YAML: \(error)")
        }
    }
}

/// Walks the YAML tree of a lab file into a ``Lab``.
struct LabLoader {
    let reader: YAMLReader
    let file: String
    var missing: [MissingFile] = []
    /// Guests' `firmware_ready:` and `boot_keys:` fields: checked against the display once the whole lab is read.
    var screenFields: [(guest: String, field: Field)] = []

    init(reader: YAMLReader, file: String) {
        self.reader = reader
        self.file = file
    }

    typealias Field = YAMLReader.Field

    static let topKeys = ["name", "qemu", "machine", "devices", "guests", "tests", "strategy", "revert", "hooks", "qemu_args", "display", "trace_qmp", "matrix", "labels", "health_check"]
    static let matrixKeys = ["devices"]
    static let machineKeys = ["type", "accel", "cpu", "memory", "smp"]
    static let deviceKeys = ["passthrough", "emulated", "attach", "bus", "addr", "properties", "hooks"]
    static let deviceHookKeys = ["before_each", "after_each", "timeout"]
    static let passthroughKeys = ["host", "ids", "rombar", "romfile"]
    static let emulatedKeys = ["driver", "disks"]
    static let diskKeys = [
        "image", "format", "readonly", "id", "type", "host", "scsi_id", "lun", "vendor", "product", "revision", "serial", "block_size",
    ]
    static let guestKeys = [
        "os", "kernel", "initrd", "append", "disk", "disk_format", "disk_interface", "bios", "firmware",
        "firmware_code", "firmware_vars", "ready", "prompt", "login", "boot_timeout", "rescan", "network", "agent", "machine",
        "qemu_args", "revert", "display", "firmware_ready", "boot_keys",
    ]
    static let loginKeys = ["user", "password", "login_prompt", "password_prompt"]
    static let testKeys = ["run", "expect", "status", "timeout", "guests", "screen_expect", "devices", "keys", "reset"]
    static let keyStepKeys = ["text", "wait", "press", "until"]
    static let hookKeys = ["before_all", "after_all", "before_each", "after_each", "timeout"]

    var directory: String { Paths.directory(of: file) }

    mutating func lab(_ root: Field) throws(LabFileError) -> Lab {
        let entries = try reader.mapping(root, allowed: Self.topKeys, what: "a lab")
        var lab = Lab(name: "", file: file, directory: directory)
        var sawName = false, sawGuests = false
        var deviceField: Field?, testField: Field?, matrixField: Field?, healthField: Field?
        for (key, field) in entries where !YAMLReader.isNull(field.node) {
            switch key {
            case "name":
                lab.name = try name(field)
                sawName = true
            case "qemu": lab.qemu = try reader.nonEmptyString(field)
            case "machine": lab.machine = try machine(field)
            case "devices": deviceField = field
            case "guests":
                lab.guests = try guests(field)
                sawGuests = true
            case "tests": testField = field
            case "strategy": lab.strategy = try reader.choice(field, Strategy.self)
            case "revert": lab.revert = try reader.choice(field, RevertMethodChoice.self)
            case "hooks": lab.hooks = try hooks(field)
            case "qemu_args": lab.qemuArgs = try qemuArgs(field)
            case "display": lab.display = try reader.choice(field, DisplayAdapter.self)
            case "trace_qmp": lab.traceQMP = try reader.bool(field)
            case "matrix": matrixField = field
            case "health_check": healthField = field
            case "labels": lab.labels = try labels(field)
            default: break
            }
        }
        if !sawName {
            let stem = Paths.baseName(file).split(separator: ".").first.map(String.init) ?? ""
            guard LabName.isValid(stem) else {
                throw LabFileError(
                    file: reader.file, line: 1, column: 1, keyPath: "name",
                    message: "missing; add `name: my-lab` ([a-z0-9][a-z0-9-]*)")
            }
            lab.name = stem
        }
        if !sawGuests || lab.guests.isEmpty {
            throw reader.error(at: root.node, path: "guests", "a lab needs at least one guest, e.g. `guests: {linux: {os: linux, kernel: ..., initrd: ...}}`")
        }
        if let deviceField { lab.devices = try devices(deviceField) }
        if let matrixField { lab.matrixDevices = try matrixDevices(matrixField, devices: lab.devices.map(\.name)) }
        if let testField { lab.tests = try tests(testField, guests: lab.guests.map(\.name), matrix: lab.matrixDevices) }
        if let healthField {
            let check = try reader.nonEmptyString(healthField)
            guard check == Lab.doctorHealthCheck || lab.tests.contains(where: { $0.name == check }) else {
                throw reader.error(healthField, "'\(check)' is neither a test of this lab (\(lab.tests.map(\.name).joined(separator: ", "))) nor `doctor`; name a short test under `tests:`, or `doctor` to check the lab's cards")
            }
            lab.healthCheck = check
        }
        lab.missingFiles = missing
        // Placement problems (slot clashes, hotplug onto pcie.0) are lab file errors too:
        // find them now, for every machine type a guest uses, not at launch.
        var types: [String] = []
        for guest in lab.guests {
            let type = lab.machineSettings(for: guest).type
            if !types.contains(type) { types.append(type) }
        }
        for type in types { _ = try DevicePlacement.plan(devices: lab.devices, machineType: type) }
        // Screen text needs a screen.
        for (name, field) in screenFields where lab.guest(named: name).map({ lab.display(for: $0) }) == DisplayAdapter.none {
            throw reader.error(field, "guest \(name) has no display to read firmware text from (and press keys on); add `display: vga` (to the guest or the lab)")
        }
        return lab
    }

    /// Extra QEMU options, none of them one qlab owns (``OwnedQEMUOptions``).
    func qemuArgs(_ field: Field) throws(LabFileError) -> [String] {
        let items: [Field]
        if case .scalar = field.node { items = [field] } else { items = try reader.sequence(field) }
        var words: [String] = []
        for item in items { words.append(try reader.string(item)) }
        for index in words.indices {
            if let refusal = OwnedQEMUOptions.refusal(words, at: index) { throw reader.error(items[index], refusal) }
        }
        return words
    }

    func name(_ field: Field) throws(LabFileError) -> String {
        let value = try reader.string(field)
        guard LabName.isValid(value) else {
            throw reader.error(field, "'\(value)' is not a valid lab name; use lower-case letters, digits and '-', starting with a letter or digit (e.g. aha2930-bench)")
        }
        return value
    }

    func machine(_ field: Field) throws(LabFileError) -> MachineSettings {
        var settings = MachineSettings()
        for (key, value) in try reader.mapping(field, allowed: Self.machineKeys, what: "the machine") where !YAMLReader.isNull(value.node) {
            switch key {
            case "type":
                let type = try reader.nonEmptyString(value)
                guard MachineFamily(type: type) != nil else {
                    throw reader.error(value, "machine type '\(type)' is not supported; use q35 or pc (or a versioned pc-q35-X / pc-i440fx-X)")
                }
                settings.type = type
            case "accel": settings.accel = try reader.choice(value, AccelMode.self)
            case "cpu": settings.cpu = try reader.nonEmptyString(value)
            case "memory":
                let size = try reader.byteSize(value)
                guard size.isWholeMebibytes, size.mebibytes >= 16 else {
                    throw reader.error(value, "memory must be a whole number of MiB and at least 16M")
                }
                settings.memory = size
            case "smp": settings.smp = try reader.int(value, range: 1...255)
            default: break
            }
        }
        return settings
    }

    mutating func devices(_ field: Field) throws(LabFileError) -> [LabDevice] {
        var devices: [LabDevice] = []
        // QEMU ids are one namespace: device names and the disk ids derived from them.
        var usedIDs: [String: String] = [:]
        for (name, deviceField) in try reader.mapping(field, what: "the lab's devices") {
            guard DeviceName.isValid(name) else {
                throw reader.error(
                    at: deviceField.keyNode, path: deviceField.path,
                    "'\(name)' cannot be a QEMU device id; start with a letter, then letters, digits, '-', '_' or '.'\(name.hasPrefix("qlab-") ? " (the qlab- prefix is reserved)" : "")")
            }
            if let user = usedIDs[name] {
                throw reader.error(at: deviceField.keyNode, path: deviceField.path, "'\(name)' is already the id of \(user); rename the device")
            }
            usedIDs[name] = "device \(name)"
            let device = try self.device(name, deviceField)
            for (index, disk) in (device.emulated?.disks ?? []).enumerated() {
                if let user = usedIDs[disk.id] {
                    throw reader.error(at: deviceField.node, path: deviceField.path + ".emulated.disks[\(index)].id", "'\(disk.id)' is already the id of \(user); give the disk another `id:`")
                }
                usedIDs[disk.id] = "disk \(index) of \(name)"
            }
            devices.append(device)
        }
        return devices
    }

    mutating func device(_ name: String, _ field: Field) throws(LabFileError) -> LabDevice {
        let entries = try reader.mapping(field, allowed: Self.deviceKeys, what: "the device")
        var kind: LabDevice.Kind?
        var attach = Attach.boot
        var bus: String?
        var addr: PCISlotAddress?
        var properties: [DeviceProperty] = []
        var hooks: DeviceHooks?
        for (key, value) in entries where !YAMLReader.isNull(value.node) {
            switch key {
            case "passthrough", "emulated":
                if kind != nil {
                    throw reader.error(at: value.keyNode, path: value.path, "a device is either passthrough or emulated, not both; split it into two devices")
                }
                kind = key == "passthrough" ? .passthrough(try passthrough(value)) : .emulated(try emulated(name, value))
            case "attach": attach = try reader.choice(value, Attach.self)
            case "hooks": hooks = try deviceHooks(value)
            case "bus":
                let text = try reader.nonEmptyString(value)
                guard DeviceName.isValidBus(text) else { throw reader.error(value, "'\(text)' is not a QEMU bus name (e.g. pcie.0, pci.0, qlab-pcibr0)") }
                bus = text
            case "addr":
                let text = try reader.string(value)
                guard let parsed = PCISlotAddress(text) else {
                    throw reader.error(value, "'\(text)' is not a PCI slot; write it as QEMU does, in hex: 0x5 or 0x5.0x1 (slot 0-0x1f, function 0-7)")
                }
                addr = parsed
            case "properties":
                for (property, propertyField) in try reader.mapping(value, what: "extra -device properties") {
                    guard DeviceName.isValidProperty(property) else {
                        throw reader.error(at: propertyField.keyNode, path: propertyField.path, "'\(property)' is not a QEMU property name")
                    }
                    if ["id", "bus", "addr", "driver", "host"].contains(property) {
                        throw reader.error(at: propertyField.keyNode, path: propertyField.path, "'\(property)' is set by qlab; use the device's own key (bus:, addr:, passthrough.host) instead")
                    }
                    properties.append(DeviceProperty(property, QEMUValue.inferred(try reader.string(propertyField))))
                }
            default: break
            }
        }
        guard let kind else {
            throw reader.error(at: field.keyNode ?? field.node, path: field.path, "say what the device is: `passthrough: {host: \"0000:03:05.0\"}` or `emulated: {driver: lsi53c895a, disks: [...]}`")
        }
        var device = LabDevice(name: name, kind: kind, attach: attach, bus: bus, addr: addr, properties: properties, location: reader.location(field))
        device.hooks = hooks
        return device
    }

    mutating func passthrough(_ field: Field) throws(LabFileError) -> Passthrough {
        var host: Passthrough.HostSelector?
        var rombar: Bool?
        var romfile: String?
        for (key, value) in try reader.mapping(field, allowed: Self.passthroughKeys, what: "the host device") where !YAMLReader.isNull(value.node) {
            switch key {
            case "host", "ids":
                if host != nil {
                    throw reader.error(at: value.keyNode, path: value.path, "give either host: or ids:, not both")
                }
                let text = try reader.string(value)
                if key == "host" {
                    guard let address = PCIAddress(text) else {
                        throw reader.error(value, "'\(text)' is not a PCI address; write it as lspci -D shows it, e.g. \"0000:03:05.0\" (quote it)")
                    }
                    host = .address(address)
                } else {
                    guard let ids = Self.parseIDs(text) else {
                        throw reader.error(value, "'\(text)' is not a vendor:device pair; write it as lspci -nn shows it, e.g. \"9004:5078\" (quote it)")
                    }
                    host = .ids(vendor: ids.vendor, device: ids.device)
                }
            case "rombar": rombar = try reader.bool(value)
            case "romfile": romfile = try path(value, guest: nil)
            default: break
            }
        }
        guard let host else {
            throw reader.error(field, "name the host device: `host: \"0000:03:05.0\"` or `ids: \"9004:5078\"`")
        }
        return Passthrough(host: host, rombar: rombar, romfile: romfile)
    }

    static func parseIDs(_ text: String) -> (vendor: UInt16, device: UInt16)? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ $0.count == 4 }),
            let vendor = UInt16(parts[0], radix: 16), let device = UInt16(parts[1], radix: 16)
        else { return nil }
        return (vendor, device)
    }

    mutating func emulated(_ deviceName: String, _ field: Field) throws(LabFileError) -> EmulatedController {
        var driver: String?
        var disks: [EmulatedDisk] = []
        var diskFields: [Field] = []
        for (key, value) in try reader.mapping(field, allowed: Self.emulatedKeys, what: "the emulated controller") where !YAMLReader.isNull(value.node) {
            switch key {
            case "driver":
                let text = try reader.string(value)
                let known = EmulatedController.knownDrivers.map(\.driver)
                guard known.contains(text) else {
                    var message = "'\(text)' is not an emulated controller qlab knows; known: \(known.joined(separator: ", "))"
                    if let close = Suggestion.closest(to: text, in: known) { message += "; did you mean '\(close)'?" }
                    throw reader.error(value, message)
                }
                driver = text
            case "disks":
                for (index, diskField) in try reader.sequence(value).enumerated() {
                    disks.append(try disk(diskField, defaultID: "\(deviceName)-disk\(index)"))
                    diskFields.append(diskField)
                }
            default: break
            }
        }
        guard let driver else {
            throw reader.error(field, "name the controller model: `driver: lsi53c895a` (or am53c974, megasas, ...)")
        }
        disks = try checkBus(disks, fields: diskFields, driver: driver)
        return EmulatedController(driver: driver, disks: disks)
    }

    /// Each disk's SCSI id and LUN within what the controller's bus takes
    /// (``EmulatedController/busLimits(of:)``), and no two disks at one id and LUN.
    /// When some disks name their id, the others get theirs here, the lowest
    /// free on the bus: QEMU would give them the lowest free id as it creates
    /// them, which a disk named later may then find taken.
    func checkBus(_ disks: [EmulatedDisk], fields: [Field], driver: String) throws(LabFileError) -> [EmulatedDisk] {
        let limits = EmulatedController.busLimits(of: driver)
        var used: [String: Int] = [:]
        for (index, disk) in disks.enumerated() {
            let field = fields[index]
            let place = { (key: String) -> Field in
                (try? self.reader.mapping(field))?.first { $0.key == key }?.field ?? field
            }
            if let id = disk.shape.scsiID, !limits.ids.contains(id) {
                let own = limits.ids.upperBound == 6 && id == 7 ? " (7 is the controller's own id on this narrow SCSI bus)" : ""
                throw reader.error(place("scsi_id"), "scsi_id \(id) is not on \(driver)'s bus\(own); use \(limits.ids.lowerBound)-\(limits.ids.upperBound)")
            }
            if let lun = disk.shape.lun, !limits.luns.contains(lun) {
                let range = limits.luns.count == 1 ? "only LUN 0" : "LUNs \(limits.luns.lowerBound)-\(limits.luns.upperBound)"
                throw reader.error(place("lun"), "lun \(lun) is not on \(driver)'s bus: it takes \(range); use another controller (e.g. am53c974: 0-7, virtio-scsi-pci) for more LUNs")
            }
            guard let id = disk.shape.scsiID else { continue }
            let key = "\(id):\(disk.shape.lun ?? 0)"
            if let other = used[key] {
                throw reader.error(place("scsi_id"), "disk \(other) is already at scsi_id \(id), lun \(disk.shape.lun ?? 0); give this disk another scsi_id or lun")
            }
            used[key] = index
        }
        guard disks.contains(where: { $0.shape.scsiID != nil }) else { return disks }
        var placed = disks
        for index in placed.indices where placed[index].shape.scsiID == nil {
            let lun = placed[index].shape.lun ?? 0
            guard let free = limits.ids.first(where: { used["\($0):\(lun)"] == nil }) else {
                throw reader.error(fields[index], "no free scsi_id left on \(driver)'s bus (\(limits.ids.lowerBound)-\(limits.ids.upperBound)) for this disk")
            }
            placed[index].shape.scsiID = free
            used["\(free):\(lun)"] = index
        }
        return placed
    }

    mutating func disk(_ field: Field, defaultID: String) throws(LabFileError) -> EmulatedDisk {
        if case .scalar = field.node {
            let image = try path(field, guest: nil)
            return EmulatedDisk(image: image, format: LabPaths.imageFormat(image), id: defaultID)
        }
        var image: String?
        var format: String?
        var readonly = false
        var id = defaultID
        var type = EmulatedDisk.DiskType.disk
        var host: (path: String, isBlock: Bool, field: Field)?
        var shape = EmulatedDisk.Shape()
        var shapeFields: [(key: String, field: Field)] = []
        for (key, value) in try reader.mapping(field, allowed: Self.diskKeys, what: "a disk") where !YAMLReader.isNull(value.node) {
            switch key {
            case "image": image = try path(value, guest: nil)
            case "format": format = try imageFormat(value)
            case "readonly": readonly = try reader.bool(value)
            case "id":
                let text = try reader.string(value)
                guard DeviceName.isValid(text) else { throw reader.error(value, "'\(text)' cannot be a QEMU id; start with a letter, then letters, digits, '-', '_' or '.'") }
                id = text
            case "type": type = try reader.choice(value, EmulatedDisk.DiskType.self)
            case "host":
                let device = try hostSCSIDevice(value)
                host = (device.path, device.isBlock, value)
            case "scsi_id": shape.scsiID = try reader.int(value, range: 0...65535)
            case "lun": shape.lun = try reader.int(value, range: 0...65535)
            case "vendor": shape.vendor = try inquiryString(value, key: key, limit: 8)
            case "product": shape.product = try inquiryString(value, key: key, limit: 16)
            case "revision": shape.revision = try inquiryString(value, key: key, limit: 4)
            case "serial": shape.serial = try inquiryString(value, key: key, limit: 36)
            case "block_size":
                let size = try reader.int(value, range: 0...Int(Int32.max))
                guard [512, 1024, 2048, 4096].contains(size) else {
                    throw reader.error(value, "block_size \(size) is not one qlab emulates; use 512, 1024, 2048 or 4096")
                }
                shape.blockSize = size
            default: break
            }
            if ["vendor", "product", "revision", "serial", "block_size", "format", "readonly", "type"].contains(key) { shapeFields.append((key, value)) }
        }
        if let host {
            if image != nil {
                throw reader.error(host.field, "a disk is either an image or a host SCSI device; give image: or host:, not both")
            }
            if let (key, value) = shapeFields.first {
                throw reader.error(at: value.keyNode, path: value.path, "`\(key):` does not apply to a host SCSI device: the guest sees the device's own INQUIRY data and blocks; keep host:, scsi_id:, lun: and id:")
            }
            var disk = EmulatedDisk(image: "", format: "raw", id: id, host: host.path, shape: shape)
            disk.hostIsBlockDevice = host.isBlock
            return disk
        }
        guard let image else { throw reader.error(field, "a disk needs `image: path/to/disk.qcow2` (or `host: /dev/sgN` for a host SCSI device)") }
        if type == .cdrom, let blocks = shapeFields.first(where: { $0.key == "block_size" }), shape.blockSize != 2048 {
            throw reader.error(blocks.field, "a CD-ROM's blocks are 2048 bytes; drop block_size: (or use type: disk)")
        }
        if type == .cdrom { shape.blockSize = nil }
        return EmulatedDisk(image: image, format: format ?? LabPaths.imageFormat(image), readonly: readonly, id: id, type: type, shape: shape)
    }

    /// An INQUIRY text (vendor, product, revision, serial): printable ASCII, at most `limit` characters.
    func inquiryString(_ field: Field, key: String, limit: Int) throws(LabFileError) -> String {
        let text = try reader.string(field)
        guard !text.isEmpty, text.unicodeScalars.allSatisfy({ (0x20...0x7e).contains($0.value) }) else {
            throw reader.error(field, "\(key): is sent in the target's INQUIRY data: give printable ASCII (letters, digits, spaces, punctuation)")
        }
        guard text.count <= limit else {
            throw reader.error(field, "\(key): '\(text)' has \(text.count) characters; INQUIRY holds at most \(limit)")
        }
        return text
    }

    /// `host: /dev/sgN`: an absolute path to a character device (SCSI generic,
    /// `scsi-generic`) or a block device (`scsi-block`). Not a device at all is
    /// an error now; missing, or not readable and writable by this user, is
    /// recorded like a missing image (`qlab args` still prints the command line).
    mutating func hostSCSIDevice(_ field: Field) throws(LabFileError) -> (path: String, isBlock: Bool) {
        let path = try reader.nonEmptyString(field)
        guard path.hasPrefix("/") else {
            throw reader.error(field, "'\(path)' is not an absolute path; name the host SCSI device as /dev/sgN (`lsscsi -g` lists them)")
        }
        guard let status = FileStatus.following(path) else {
            missing.append(MissingFile(guest: nil, path: path, error: reader.error(field, "\(path) does not exist on this host; name a host SCSI device (`lsscsi -g` lists them)")))
            return (path, false)
        }
        switch status.kind {
        case .characterDevice, .blockDevice: break
        default:
            throw reader.error(field, "\(path) is \(Self.describe(status.kind)), not a host SCSI device; give its SCSI generic node, /dev/sgN (`lsscsi -g` lists them)")
        }
        if !HostFiles.canReadWrite(path) {
            missing.append(MissingFile(guest: nil, path: path, error: reader.error(field, "\(path) cannot be opened for reading and writing by this user (QEMU sends SCSI commands through it); give the user access (e.g. the disk group) or run as one who has it")))
        }
        return (path, status.kind == .blockDevice)
    }

    static func describe(_ kind: FileStatus.Kind) -> String {
        switch kind {
        case .directory: return "a directory"
        case .regular: return "a regular file"
        case .symbolicLink: return "a symbolic link"
        case .blockDevice: return "a block device"
        case .characterDevice: return "a character device"
        case .fifo: return "a FIFO"
        case .socket: return "a socket"
        case .other: return "not a device"
        }
    }

    func imageFormat(_ field: Field) throws(LabFileError) -> String {
        let text = try reader.string(field)
        guard ["qcow2", "raw"].contains(text) else { throw reader.error(field, "'\(text)' is not an image format qlab handles; use qcow2 or raw") }
        return text
    }

    /// An absolute path; records it as missing when it does not exist.
    mutating func path(_ field: Field, guest: String?) throws(LabFileError) -> String {
        let text = try reader.nonEmptyString(field)
        let resolved = Paths.absolute(text, relativeTo: directory)
        if let kind = LabPaths.unusableFileKind(resolved) {
            throw reader.error(field, "\(resolved) is \(kind), not a file QEMU can boot or use as an image; give a regular file")
        }
        if !FileSystem.exists(resolved) {
            let hint = resolved.contains("/images/out/") ? " (build the images with images/build.sh)" : ""
            missing.append(
                MissingFile(
                    guest: guest, path: resolved,
                    error: reader.error(field, "\(resolved) does not exist\(hint); fix the path (relative paths are relative to the lab file)")))
        }
        return resolved
    }

    mutating func guests(_ field: Field) throws(LabFileError) -> [LabGuest] {
        var guests: [LabGuest] = []
        for (name, guestField) in try reader.mapping(field, what: "the lab's guests") {
            guard LabName.isValid(name) else {
                throw reader.error(at: guestField.keyNode, path: guestField.path, "'\(name)' is not a valid guest name; use lower-case letters, digits and '-'")
            }
            guests.append(try guest(name, guestField))
        }
        return guests
    }

    mutating func guest(_ name: String, _ field: Field) throws(LabFileError) -> LabGuest {
        let entries = try reader.mapping(field, allowed: Self.guestKeys, what: "the guest")
        guard let osField = entries.first(where: { $0.key == "os" })?.field, !YAMLReader.isNull(osField.node) else {
            throw reader.error(at: field.keyNode ?? field.node, path: field.path + ".os", "missing; say which OS profile the guest uses: \(GuestOS.allCases.map(\.rawValue).joined(separator: "|"))")
        }
        var guest = LabGuest(name: name, os: try reader.choice(osField, GuestOS.self), location: reader.location(field))
        var diskFormat: String?
        for (key, value) in entries where !YAMLReader.isNull(value.node) {
            switch key {
            case "os": break
            case "kernel": guest.kernel = try path(value, guest: name)
            case "initrd": guest.initrd = try path(value, guest: name)
            case "append": guest.append = try reader.string(value)
            case "disk": guest.disk = try path(value, guest: name)
            case "disk_format": diskFormat = try imageFormat(value)
            case "disk_interface": guest.diskInterface = try reader.choice(value, DiskInterface.self)
            case "bios": guest.bios = try path(value, guest: name)
            case "firmware": guest.firmware = try reader.choice(value, FirmwareKind.self)
            case "display": guest.display = try reader.choice(value, DisplayAdapter.self)
            case "firmware_ready":
                guest.firmwareReady = try reader.nonEmptyString(value)
                screenFields.append((name, value))
            case "boot_keys":
                guest.bootKeys = try keySteps(value)
                screenFields.append((name, value))
            case "firmware_code": guest.firmwareCode = try path(value, guest: name)
            case "firmware_vars": guest.firmwareVars = try path(value, guest: name)
            case "ready": guest.ready = try reader.nonEmptyString(value)
            case "prompt": guest.prompt = try reader.nonEmptyString(value)
            case "login": guest.login = try login(value)
            case "boot_timeout": guest.bootTimeout = try reader.duration(value)
            case "rescan": guest.rescan = try reader.string(value)
            case "agent": guest.agent = try reader.bool(value)
            case "revert": guest.revert = try reader.choice(value, RevertMethodChoice.self)
            case "network": guest.network = try reader.choice(value, NetworkMode.self)
            case "machine": guest.machine = try machine(value)
            case "qemu_args": guest.qemuArgs = try qemuArgs(value)
            default: break
            }
        }
        if let disk = guest.disk { guest.diskFormat = diskFormat ?? LabPaths.imageFormat(disk) }
        if guest.initrd != nil, guest.kernel == nil {
            throw reader.error(field, "initrd: needs kernel: (direct kernel boot)")
        }
        if guest.append != nil, guest.kernel == nil {
            throw reader.error(field, "append: is the kernel command line and needs kernel:")
        }
        if guest.bios != nil, guest.effectiveFirmware == .uefi {
            throw reader.error(field, "bios: is for BIOS firmware, but this guest boots UEFI; use firmware_code:/firmware_vars: or set firmware: bios")
        }
        if guest.kernel == nil, guest.disk == nil {
            throw reader.error(at: field.keyNode ?? field.node, path: field.path, "the guest has nothing to boot; give disk: (a base image) or kernel:/initrd:")
        }
        return guest
    }

    func login(_ field: Field) throws(LabFileError) -> GuestLogin {
        if case .scalar = field.node { return GuestLogin(user: try reader.nonEmptyString(field)) }
        var login = GuestLogin(user: "")
        for (key, value) in try reader.mapping(field, allowed: Self.loginKeys, what: "the console login") where !YAMLReader.isNull(value.node) {
            switch key {
            case "user": login.user = try reader.nonEmptyString(value)
            case "password": login.password = try reader.string(value)
            case "login_prompt": login.loginPrompt = try reader.nonEmptyString(value)
            case "password_prompt": login.passwordPrompt = try reader.nonEmptyString(value)
            default: break
            }
        }
        if login.user.isEmpty { throw reader.error(field, "login needs `user:`") }
        return login
    }

    func tests(_ field: Field, guests: [String], matrix: [String] = []) throws(LabFileError) -> [LabTest] {
        var tests: [LabTest] = []
        for (name, testField) in try reader.mapping(field, what: "the lab's tests") {
            guard TestName.isValid(name) else {
                throw reader.error(at: testField.keyNode, path: testField.path, "'\(name)' is not a valid test name; use letters, digits, '-', '_' and '.'")
            }
            if case .scalar = testField.node {
                tests.append(LabTest(name: name, run: try reader.nonEmptyString(testField)))
                continue
            }
            var test = LabTest(name: name, run: "")
            for (key, value) in try reader.mapping(testField, allowed: Self.testKeys, what: "the test") where !YAMLReader.isNull(value.node) {
                switch key {
                case "run": test.run = try reader.nonEmptyString(value)
                case "expect": test.expect = try reader.strings(value)
                case "status": test.status = Int32(try reader.int(value, range: 0...255))
                case "timeout": test.timeout = try reader.duration(value)
                case "screen_expect": test.screenExpect = try reader.strings(value)
                case "keys": test.keys = try keySteps(value)
                case "reset": test.reset = try reader.bool(value)
                case "guests":
                    let names = try reader.strings(value)
                    for (index, guest) in names.enumerated() where !guests.contains(guest) {
                        var message = "no guest '\(guest)' in this lab"
                        if let close = Suggestion.closest(to: guest, in: guests) { message += "; did you mean '\(close)'?" }
                        let item = (try? reader.sequence(value))?[index] ?? value
                        throw reader.error(item, message)
                    }
                    test.guests = names
                case "devices":
                    guard !matrix.isEmpty else {
                        throw reader.error(value, "a test's devices: chooses among the lab's device dimension; add `matrix: {devices: each}` (or a list) to the lab")
                    }
                    let names = try reader.strings(value)
                    for (index, device) in names.enumerated() where !matrix.contains(device) {
                        var message = "no device '\(device)' in the lab's matrix"
                        if let close = Suggestion.closest(to: device, in: matrix) { message += "; did you mean '\(close)'?" }
                        let item = (try? reader.sequence(value))?[index] ?? value
                        throw reader.error(item, message + "; its devices: " + matrix.joined(separator: ", "))
                    }
                    test.devices = names
                default: break
                }
            }
            if test.run.isEmpty && test.screenExpect.isEmpty && test.keys.isEmpty {
                throw reader.error(at: testField.keyNode ?? testField.node, path: testField.path + ".run", "missing; give the shell command to run in the guest (or screen_expect:/keys: for a test that only reads the screen and types)")
            }
            if test.reset, !test.run.isEmpty, let field = try reader.mapping(testField).first(where: { $0.key == "reset" })?.field {
                throw reader.error(field, "reset: restarts the guest's firmware for keys: and screen_expect:, and leaves no shell for run:; put the command in a test of its own")
            }
            tests.append(test)
        }
        return tests
    }

    /// A test's `keys:`: a string or a list, each item `esc` / `down down ret`
    /// (combinations pressed in turn), `{text: "..."}`, `{wait: "..."}` or
    /// `{press: esc, until: "..."}`; every key is checked here.
    func keySteps(_ field: Field) throws(LabFileError) -> [KeyStep] {
        let items: [Field] = if case .scalar = field.node { [field] } else { try reader.sequence(field) }
        guard !items.isEmpty else { throw reader.error(field, "an empty list; give keys (esc, ctrl-a), {text: ...}, {wait: ...} or {press: KEY, until: TEXT}") }
        var steps: [KeyStep] = []
        for item in items {
            if case .scalar = item.node {
                steps.append(.press(try combos(item)))
                continue
            }
            let entries = try reader.mapping(item, allowed: Self.keyStepKeys, what: "a keys: step")
            let keys = entries.map(\.key)
            func value(_ key: String) -> Field? { entries.first { $0.key == key }?.field }
            switch Set(keys) {
            case ["text"]:
                let text = try reader.nonEmptyString(value("text")!)
                do { _ = try TypedText.combos(for: text) } catch { throw reader.error(value("text")!, error.description) }
                steps.append(.type(text))
            case ["wait"]:
                steps.append(.wait(try reader.nonEmptyString(value("wait")!)))
            case ["press", "until"]:
                steps.append(.pressUntil(try combos(value("press")!), until: try reader.nonEmptyString(value("until")!)))
            default:
                throw reader.error(item, "a keys: step is one of {text: STRING}, {wait: TEXT} or {press: KEYS, until: TEXT}; found " + (keys.isEmpty ? "an empty mapping" : keys.joined(separator: ", ")))
            }
        }
        return steps
    }

    /// Key combinations (`esc`, `down down ret`) at `field`, or an error there naming the key.
    func combos(_ field: Field) throws(LabFileError) -> [KeyCombo] {
        let words = try reader.strings(field)
        let combos: [KeyCombo]
        do { combos = try KeyCombo.parseSequence(words) } catch { throw reader.error(field, error.description) }
        if combos.isEmpty { throw reader.error(field, "no keys; name them, e.g. esc, ctrl-a, \"down down ret\"") }
        return combos
    }

    /// `matrix: {devices: each}` (every device of the lab) or `{devices: [a, b]}`.
    func matrixDevices(_ field: Field, devices: [String]) throws(LabFileError) -> [String] {
        var names: [String] = []
        for (key, value) in try reader.mapping(field, allowed: Self.matrixKeys, what: "the matrix") where !YAMLReader.isNull(value.node) {
            guard key == "devices" else { continue }
            let known = devices.isEmpty ? "the lab has no devices; add them under `devices:`" : "its devices: " + devices.joined(separator: ", ")
            if case .scalar = value.node {
                let word = try reader.string(value)
                guard word == "each" else {
                    throw reader.error(value, "'\(word)' is neither `each` (every device of the lab) nor a list of device names; \(known)")
                }
                guard !devices.isEmpty else { throw reader.error(value, "`devices: each` needs devices: \(known)") }
                names = devices
                continue
            }
            let items = try reader.sequence(value)
            if items.isEmpty { throw reader.error(value, "an empty list; name the devices to run the tests with one at a time (\(known)), or `each`") }
            for item in items {
                let name = try reader.string(item)
                guard devices.contains(name) else {
                    var message = "no device '\(name)' in this lab"
                    if let close = Suggestion.closest(to: name, in: devices) { message += "; did you mean '\(close)'?" }
                    throw reader.error(item, message + "; " + known)
                }
                if names.contains(name) { throw reader.error(item, "device '\(name)' is listed twice") }
                names.append(name)
            }
        }
        return devices.filter(names.contains)
    }

    func hooks(_ field: Field) throws(LabFileError) -> Hooks {
        var hooks = Hooks()
        for (key, value) in try reader.mapping(field, allowed: Self.hookKeys, what: "the hooks") where !YAMLReader.isNull(value.node) {
            switch key {
            case "before_all": hooks.beforeAll = try reader.nonEmptyString(value)
            case "after_all": hooks.afterAll = try reader.nonEmptyString(value)
            case "before_each": hooks.beforeEach = try reader.nonEmptyString(value)
            case "after_each": hooks.afterEach = try reader.nonEmptyString(value)
            case "timeout": hooks.timeout = try reader.duration(value)
            default: break
            }
        }
        return hooks
    }

    /// A device's `hooks: {before_each, after_each, timeout}`.
    func deviceHooks(_ field: Field) throws(LabFileError) -> DeviceHooks {
        var hooks = DeviceHooks()
        let entries: [(key: String, field: Field)]
        do {
            entries = try reader.mapping(field, allowed: Self.deviceHookKeys, what: "a device's hooks")
        } catch {
            // before_all/after_all belong to the whole run, not to a device.
            if let key = ["before_all", "after_all"].first(where: { key in (try? reader.mapping(field))?.contains { $0.key == key } ?? false }),
                let keyField = (try? reader.mapping(field))?.first(where: { $0.key == key })?.field {
                throw reader.error(at: keyField.keyNode, path: keyField.path, "\(key) runs once around the whole run: put it in the lab's `hooks:`; a device has before_each, after_each and timeout")
            }
            throw error
        }
        for (key, value) in entries where !YAMLReader.isNull(value.node) {
            switch key {
            case "before_each": hooks.beforeEach = try reader.nonEmptyString(value)
            case "after_each": hooks.afterEach = try reader.nonEmptyString(value)
            case "timeout": hooks.timeout = try reader.duration(value)
            default: break
            }
        }
        return hooks
    }

    /// `labels: {firmware: 21.12.1, build: abc}`: keys as ``RunLabel/keyRefusal(_:)`` allows, values one line of text.
    func labels(_ field: Field) throws(LabFileError) -> [RunLabel] {
        var labels: [RunLabel] = []
        for (key, value) in try reader.mapping(field, what: "the run's labels") {
            if let refusal = RunLabel.keyRefusal(key) {
                throw reader.error(at: value.keyNode, path: value.path, "label '\(key)': \(refusal)")
            }
            let text = YAMLReader.isNull(value.node) ? "" : try reader.string(value)
            if let refusal = RunLabel.valueRefusal(text) {
                throw reader.error(value, "label \(key): \(refusal)")
            }
            labels.append(RunLabel(key: key, value: text))
        }
        return labels
    }
}

/// QEMU ids (`id_wellformed`: a letter, then letters, digits, `-`, `_`, `.`); `qlab-` is reserved.
enum DeviceName {
    static func isValid(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCII, first.properties.isAlphabetic else { return false }
        return !name.hasPrefix("qlab-") && name.count <= 64
            && name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)) }
    }

    static func isValidBus(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCII, first.properties.isAlphabetic else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)) }
    }

    static func isValidProperty(_ name: String) -> Bool {
        !name.isEmpty && name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)) }
    }
}

enum TestName {
    static func isValid(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first.isASCII, first.properties.isAlphabetic || ("0"..."9").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)) }
    }
}
