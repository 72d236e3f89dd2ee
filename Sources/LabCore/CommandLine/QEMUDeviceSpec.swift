import QMP

/// One QEMU device, built once and rendered either as a `-device` argument
/// (attached at boot) or as `device_add` arguments (hotplugged), so a card
/// lands in the same slot with the same properties both ways.
public struct QEMUDeviceSpec: Sendable, Hashable {
    public var driver: String
    public var id: String
    /// Properties after driver and id, in order (bus and addr first when set).
    public var properties: [(String, QEMUValue)]

    public init(driver: String, id: String, properties: [(String, QEMUValue)] = []) {
        self.driver = driver
        self.id = id
        self.properties = properties
    }

    /// `driver,id=ID,key=value,...` for `-device`, values escaped.
    public var optionValue: String {
        QEMUOptions.join(driver, [("id", .string(id))] + properties)
    }

    /// `{"driver": ..., "id": ..., ...}` for QMP `device_add`.
    public var deviceAddArguments: JSONValue {
        var object = JSONObject()
        object["driver"] = .string(driver)
        object["id"] = .string(id)
        for (key, value) in properties { object[key] = value.json }
        return .object(object)
    }

    public static func == (a: QEMUDeviceSpec, b: QEMUDeviceSpec) -> Bool {
        a.driver == b.driver && a.id == b.id && a.properties.elementsEqual(b.properties) { $0.0 == $1.0 && $0.1 == $1.1 }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(driver)
        hasher.combine(id)
        for (key, value) in properties {
            hasher.combine(key)
            hasher.combine(value)
        }
    }
}

/// One block node, rendered as `-blockdev` or as `blockdev-add` arguments.
public struct QEMUBlockdevSpec: Sendable, Hashable {
    public var nodeName: String
    /// `file`, `qcow2`, `raw`.
    public var driver: String
    /// The rest: `filename=` for a file node, `file=` (a node name) for a format node, `read-only=`.
    public var properties: [(String, QEMUValue)]

    public init(nodeName: String, driver: String, properties: [(String, QEMUValue)]) {
        self.nodeName = nodeName
        self.driver = driver
        self.properties = properties
    }

    /// A protocol node on a file.
    public static func file(_ path: String, nodeName: String, readOnly: Bool = false) -> QEMUBlockdevSpec {
        var properties: [(String, QEMUValue)] = [("filename", .string(path))]
        if readOnly { properties.append(("read-only", .bool(true))) }
        return QEMUBlockdevSpec(nodeName: nodeName, driver: "file", properties: properties)
    }

    /// A format node (qcow2/raw) over another node.
    public static func format(_ format: String, over file: String, nodeName: String, readOnly: Bool = false) -> QEMUBlockdevSpec {
        var properties: [(String, QEMUValue)] = [("file", .string(file))]
        if readOnly { properties.append(("read-only", .bool(true))) }
        return QEMUBlockdevSpec(nodeName: nodeName, driver: format, properties: properties)
    }

    /// `driver=...,node-name=...,key=value` for `-blockdev`.
    public var optionValue: String {
        QEMUOptions.join(nil, [("driver", .string(driver)), ("node-name", .string(nodeName))] + properties)
    }

    /// `{"driver": ..., "node-name": ..., ...}` for QMP `blockdev-add`.
    public var blockdevAddArguments: JSONValue {
        var object = JSONObject()
        object["driver"] = .string(driver)
        object["node-name"] = .string(nodeName)
        for (key, value) in properties { object[key] = value.json }
        return .object(object)
    }

    public static func == (a: QEMUBlockdevSpec, b: QEMUBlockdevSpec) -> Bool {
        a.nodeName == b.nodeName && a.driver == b.driver && a.properties.elementsEqual(b.properties) { $0.0 == $1.0 && $0.1 == $1.1 }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(nodeName)
        hasher.combine(driver)
        for (key, value) in properties {
            hasher.combine(key)
            hasher.combine(value)
        }
    }
}

/// Everything one lab device needs in QEMU, in the order to create it: block
/// nodes, then the controller, then its disks. Detach in reverse: `device_del`
/// of ``controllerID`` (its disks go with it), then `blockdev-del` of
/// ``blockdevs`` in reverse order.
public struct DeviceAttachment: Sendable, Hashable {
    public var blockdevs: [QEMUBlockdevSpec]
    /// The controller (or vfio-pci) first, then any scsi-hd on its bus.
    public var devices: [QEMUDeviceSpec]

    public var controllerID: String { devices.first?.id ?? "" }

    /// `-blockdev X ... -device Y ...`.
    public var commandLineArguments: [String] {
        blockdevs.flatMap { ["-blockdev", $0.optionValue] } + devices.flatMap { ["-device", $0.optionValue] }
    }
}
