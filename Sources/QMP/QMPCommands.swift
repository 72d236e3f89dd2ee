/// Typed helpers over ``QMPClient/execute(_:arguments:timeout:outOfBand:)``
/// for the commands qlab uses.
extension QMPClient {
    /// `query-status`.
    public func queryStatus() async throws -> VMStatus {
        let reply = try await execute("query-status")
        guard let status = reply["status"]?.stringValue else {
            throw QMPError.protocolViolation("query-status reply has no status: \(reply)")
        }
        return VMStatus(status: status, running: reply["running"]?.boolValue ?? (status == "running"))
    }

    /// `query-version`.
    public func queryVersion() async throws -> QEMUVersion {
        let reply = try await execute("query-version")
        guard let version = QEMUVersion(reply) else {
            throw QMPError.protocolViolation("query-version reply not understood: \(reply)")
        }
        return version
    }

    /// `query-pci`, flattened: every device on every bus, bridges' children included.
    public func queryPCI() async throws -> [PCIDeviceInfo] {
        let reply = try await execute("query-pci")
        var devices: [PCIDeviceInfo] = []
        for bus in reply.arrayValue ?? [] {
            PCIDeviceInfo.collect(bus["devices"]?.arrayValue ?? [], into: &devices)
        }
        return devices
    }

    /// `stop`: pauses the guest (a STOP event follows).
    public func stop() async throws { _ = try await execute("stop") }

    /// `cont`: resumes the guest (a RESUME event follows).
    public func cont() async throws { _ = try await execute("cont") }

    /// `system_reset` (a RESET event follows).
    public func systemReset() async throws { _ = try await execute("system_reset") }

    /// `quit`: QEMU exits after replying; the connection then closes.
    public func quit() async throws { _ = try await execute("quit") }

    /// `device_add` with `driver`, `id` and further properties.
    public func deviceAdd(driver: String, id: String, properties: JSONObject = JSONObject()) async throws {
        var arguments: JSONObject = ["driver": .string(driver), "id": .string(id)]
        for (key, value) in properties where key != "driver" && key != "id" { arguments[key] = value }
        _ = try await execute("device_add", arguments: arguments)
    }

    /// `device_del`: only starts the unplug; completion is the
    /// DEVICE_DELETED event, which needs the guest's cooperation for PCI.
    public func deviceDel(id: String) async throws {
        _ = try await execute("device_del", arguments: ["id": .string(id)])
    }

    /// `human-monitor-command` with a validated HMP command line; returns HMP's output.
    public func humanMonitorCommand(_ command: HMPCommand, timeout: Duration? = nil) async throws -> String {
        let reply = try await execute(
            "human-monitor-command", arguments: ["command-line": .string(command.commandLine)], timeout: timeout)
        return reply.stringValue ?? ""
    }
}

/// `query-status`'s answer.
public struct VMStatus: Sendable, Hashable {
    /// QEMU's RunState: running, paused, prelaunch, shutdown, internal-error, ...
    public var status: String
    public var running: Bool

    public init(status: String, running: Bool) {
        self.status = status
        self.running = running
    }
}

/// One device from `query-pci`.
public struct PCIDeviceInfo: Sendable, Hashable {
    public var bus: Int
    public var slot: Int
    public var function: Int
    /// The device's `id` (the lab's device name when qlab added it), "" when none.
    public var qdevID: String
    public var vendorID: Int
    public var deviceID: Int
    public var classCode: Int
    public var classDescription: String?
    public var irq: Int?
    public var isBridge: Bool

    static func collect(_ list: [JSONValue], into devices: inout [PCIDeviceInfo]) {
        for device in list {
            devices.append(
                PCIDeviceInfo(
                    bus: device["bus"]?.intValue ?? 0, slot: device["slot"]?.intValue ?? 0,
                    function: device["function"]?.intValue ?? 0, qdevID: device["qdev_id"]?.stringValue ?? "",
                    vendorID: device["id"]?["vendor"]?.intValue ?? 0, deviceID: device["id"]?["device"]?.intValue ?? 0,
                    classCode: device["class_info"]?["class"]?.intValue ?? 0,
                    classDescription: device["class_info"]?["desc"]?.stringValue, irq: device["irq"]?.intValue,
                    isBridge: device["pci_bridge"] != nil))
            if let children = device["pci_bridge"]?["devices"]?.arrayValue {
                collect(children, into: &devices)
            }
        }
    }
}

/// A human monitor (HMP) command line, validated before it is sent.
///
/// HMP parses a command line, so a value pasted into it could smuggle a
/// second argument or command. Only a known verb and arguments from a safe
/// character set (no spaces, quotes, control characters or `;`) pass.
public struct HMPCommand: Sendable, Hashable, CustomStringConvertible {
    public let verb: String
    public let arguments: [String]

    /// Verbs qlab sends. Others can be allowed by a caller that validated them.
    public static let knownVerbs: Set<String> = ["savevm", "loadvm", "delvm", "info", "sendkey", "screendump"]

    public init(_ verb: String, _ arguments: [String] = [], allowing extraVerbs: Set<String> = []) throws(HMPValidationError) {
        guard Self.knownVerbs.contains(verb) || extraVerbs.contains(verb) else {
            throw HMPValidationError(value: verb, reason: "not an HMP command qlab sends")
        }
        for argument in arguments {
            try Self.validateArgument(argument)
        }
        self.verb = verb
        self.arguments = arguments
    }

    /// A snapshot tag: letters, digits, `-`, `_`, `.`, `:`, at most 64 characters,
    /// not all digits (HMP treats a number as a snapshot id, not a name).
    public static func validateSnapshotTag(_ tag: String) throws(HMPValidationError) {
        guard !tag.isEmpty, tag.utf8.count <= 64 else {
            throw HMPValidationError(value: tag, reason: "a snapshot tag has 1 to 64 characters")
        }
        guard tag.unicodeScalars.allSatisfy({ $0.isASCII && (isAlphanumeric($0) || "-_.:".unicodeScalars.contains($0)) }) else {
            throw HMPValidationError(value: tag, reason: "a snapshot tag may hold only letters, digits, '-', '_', '.', ':'")
        }
        guard !tag.unicodeScalars.allSatisfy({ $0.properties.numericType != nil }) else {
            throw HMPValidationError(value: tag, reason: "a snapshot tag must not be all digits (HMP reads it as a snapshot id)")
        }
    }

    static func validateArgument(_ argument: String) throws(HMPValidationError) {
        guard !argument.isEmpty else { throw HMPValidationError(value: argument, reason: "empty argument") }
        let allowed = "-_.:/,=+@".unicodeScalars
        guard argument.unicodeScalars.allSatisfy({ $0.isASCII && (isAlphanumeric($0) || allowed.contains($0)) }) else {
            throw HMPValidationError(value: argument, reason: "HMP arguments may hold only letters, digits and -_.:/,=+@")
        }
    }

    static func isAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
    }

    public var commandLine: String { ([verb] + arguments).joined(separator: " ") }
    public var description: String { commandLine }
}

public struct HMPValidationError: Error, Sendable, Hashable, CustomStringConvertible {
    public var value: String
    public var reason: String
    public var description: String { "refusing HMP input \"\(value)\": \(reason)" }
}
