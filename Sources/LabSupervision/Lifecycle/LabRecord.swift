import Platform
import QMP

/// `lab.json`: what `up` started and decided, for later commands.
public struct LabRecord: Sendable {
    public var name: String
    public var labFile: String
    public var guest: String
    public var qemuPID: Int32
    public var supervisorPID: Int32
    /// Start times (/proc/PID/stat field 22) of the two, taken at launch:
    /// a pid is signalled only while it still has its start time.
    public var qemuStartTime: UInt64?
    public var supervisorStartTime: UInt64?
    public var foreground: Bool
    public var startedAt: Double
    public var accel: AccelDecision
    public var consoleLog: String?
    /// Each lab device and how it is attached now.
    public var devices: [RecordedDevice]
    /// Host PCI addresses of passthrough devices: for conflicts between labs.
    public var passthroughHosts: [RecordedPassthrough]
    public var qemuLogOffset: Int
    /// The console log's size when QEMU started: this boot's console output begins there.
    public var consoleLogOffset: Int
    /// The lab file's text as planned (``Lab/source``): later commands re-make
    /// the running lab from it, never from the file as edited since. nil in
    /// records written before qlab kept it.
    public var labSource: String?
    /// What the planner found this QEMU binary can do (hotplug spells options the same way).
    public var capabilities = QEMUCapabilities()
    /// The command line QEMU was started with (empty in older records).
    public var argv: [String] = []
    /// The revert method and the RAM files (nil in older records: loadvm).
    public var revert: RevertRecord?
    /// The command the lab belongs to (`qlab run`); nil for a lab `up` started for anyone.
    public var owner: LabOwner?

    public init(
        name: String, labFile: String, guest: String, qemuPID: Int32, supervisorPID: Int32, foreground: Bool,
        startedAt: Double, accel: AccelDecision, consoleLog: String?, devices: [(name: String, state: DeviceState)],
        passthroughHosts: [(device: String, host: String)], qemuLogOffset: Int, consoleLogOffset: Int = 0
    ) {
        self.name = name
        self.labFile = labFile
        self.guest = guest
        self.qemuPID = qemuPID
        self.supervisorPID = supervisorPID
        self.foreground = foreground
        self.startedAt = startedAt
        self.accel = accel
        self.consoleLog = consoleLog
        self.devices = devices.map { RecordedDevice(name: $0.name, state: $0.state) }
        self.passthroughHosts = passthroughHosts.map { RecordedPassthrough(device: $0.device, host: $0.host) }
        self.qemuLogOffset = qemuLogOffset
        self.consoleLogOffset = consoleLogOffset
    }

    /// The record as `lab.json` holds it (``JSONValueEncoder``; nil optionals as null).
    public var json: JSONValue {
        (try? JSONValueEncoder().encode(self)) ?? .null
    }

    /// A record read from `lab.json`; nil for one `up` did not write (see ``init(from:)``).
    public init?(_ json: JSONValue) {
        guard let record = try? JSONValueDecoder().decode(LabRecord.self, from: json) else { return nil }
        self = record
    }
}

extension LabRecord: Codable {
    enum CodingKeys: String, CodingKey {
        case name, guest, foreground, accel, devices, argv
        case labFile = "lab_file"
        case qemuPID = "qemu_pid"
        case supervisorPID = "supervisor_pid"
        case qemuStartTime = "qemu_start_time"
        case supervisorStartTime = "supervisor_start_time"
        case startedAt = "started_at"
        case consoleLog = "console_log"
        case passthroughHosts = "passthrough"
        case qemuLogOffset = "qemu_log_offset"
        case consoleLogOffset = "console_log_offset"
        case labSource = "lab_source"
        case capabilities = "qemu_capabilities"
        case revert, owner
    }

    /// Name, lab file (not empty), guest, QEMU pid and accelerator are
    /// required: a record without them is not one `up` wrote, and is refused
    /// rather than read with defaults. Fields later versions added default.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        labFile = try c.decode(String.self, forKey: .labFile)
        guard !labFile.isEmpty else {
            throw DecodingError.dataCorruptedError(forKey: .labFile, in: c, debugDescription: "a lab record names its lab file")
        }
        guest = try c.decode(String.self, forKey: .guest)
        qemuPID = try c.decode(Int32.self, forKey: .qemuPID)
        accel = try c.decode(AccelDecision.self, forKey: .accel)
        supervisorPID = try c.decodeIfPresent(Int32.self, forKey: .supervisorPID) ?? 0
        qemuStartTime = try c.decodeIfPresent(UInt64.self, forKey: .qemuStartTime)
        supervisorStartTime = try c.decodeIfPresent(UInt64.self, forKey: .supervisorStartTime)
        foreground = try c.decodeIfPresent(Bool.self, forKey: .foreground) ?? false
        startedAt = try c.decodeIfPresent(Double.self, forKey: .startedAt) ?? 0
        consoleLog = try c.decodeIfPresent(String.self, forKey: .consoleLog)
        devices = try c.decodeIfPresent([RecordedDevice].self, forKey: .devices) ?? []
        passthroughHosts = try c.decodeIfPresent([RecordedPassthrough].self, forKey: .passthroughHosts) ?? []
        qemuLogOffset = try c.decodeIfPresent(Int.self, forKey: .qemuLogOffset) ?? 0
        consoleLogOffset = try c.decodeIfPresent(Int.self, forKey: .consoleLogOffset) ?? 0
        labSource = try c.decodeIfPresent(String.self, forKey: .labSource)
        capabilities = try c.decodeIfPresent(QEMUCapabilities.self, forKey: .capabilities) ?? QEMUCapabilities()
        argv = try c.decodeIfPresent([String].self, forKey: .argv) ?? []
        revert = try c.decodeIfPresent(RevertRecord.self, forKey: .revert)
        owner = try c.decodeIfPresent(LabOwner.self, forKey: .owner)
    }
}
