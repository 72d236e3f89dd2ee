import Platform
import QMP

/// What ``LabSession/attach(_:)`` did.
public struct AttachResult: Sendable {
    public var device: String
    /// `vfio-pci` or the emulated controller's model.
    public var driver: String
    public var placement: PCIPlacement
    /// Fresh overlays made for this attach, by disk id.
    public var overlays: [String: String]
    /// QEMU ids added, controller first.
    public var deviceIDs: [String]
    public var timings: StepTimings
}

extension LabSession {
    /// Hotplugs a lab device into the running VM.
    ///
    /// Emulated controller: for each writable disk a fresh qcow2 overlay over
    /// its base image (``FreshOverlay``: no run sees another's writes; the
    /// base is never written), `blockdev-add` of its file and format nodes,
    /// then `device_add` of the controller at its planned slot (the same as at
    /// boot, see ``DevicePlacement``), then a `scsi-hd` per disk on its bus.
    /// Passthrough: `device_add vfio-pci,host=...` at its slot.
    ///
    /// On failure whatever was added is removed again and QEMU's text comes
    /// back with qlab's diagnosis. The lab record then says `hotplug`.
    ///
    /// Measured on QEMU 7.2 (TCG, the test guest running): blockdev-add and
    /// device_add answer in about 1 ms each, more while a TCG vCPU is busy.
    public func attach(_ deviceName: String) async throws -> AttachResult {
        try await attach(devices: [deviceName])[0]
    }

    /// Attaches several devices in order, writing the lab record once. When
    /// one fails, those attached before it stay attached (the record says so).
    public func attach(devices names: [String]) async throws -> [AttachResult] {
        try refuseSecondDC390Plug(names)
        var results: [AttachResult] = []
        do {
            for name in names {
                results.append(try await attachOne(name))
                noteDC390Plugged(name)
            }
        } catch {
            try? setDeviceStates(results.map { ($0.device, .hotplug) })
            throw error
        }
        let start = ContinuousClock.now
        try setDeviceStates(results.map { ($0.device, .hotplug) })
        if !results.isEmpty { results[results.count - 1].timings.record("record", since: start) }
        return results
    }

    func attachOne(_ deviceName: String) async throws -> AttachResult {
        do {
            return try await attachOnce(deviceName)
        } catch DeviceError.alreadyAttached(_, let state, _) where state.contains("Duplicate nodes") {
            // Block nodes left over from an interrupted detach, with no device
            // using them: remove them and try once more.
            guard try await !peripheralIDs().contains(deviceName) else { throw DeviceError.alreadyAttached(device: deviceName, state: state, lab: lab.name) }
            await removeBlockNodes(of: try labDevice(deviceName))
            return try await attachOnce(deviceName)
        }
    }

    func attachOnce(_ deviceName: String) async throws -> AttachResult {
        var timings = StepTimings()
        let device = try labDevice(deviceName)
        let state = currentDeviceState(deviceName)
        if let state, state.isAttached {
            // The record may be stale (a reset completed a pending unplug, or
            // someone used `qlab qmp`): ask QEMU before refusing.
            var start = ContinuousClock.now
            let present = try await peripheralIDs().contains(deviceName)
            timings.record("qom-list", since: start)
            if present { throw DeviceError.alreadyAttached(device: deviceName, state: state.rawValue, lab: lab.name) }
            start = ContinuousClock.now
            await removeBlockNodes(of: device)
            timings.record("blockdev-del stale nodes", since: start)
        }

        var overlays: [String: String] = [:]
        var start = ContinuousClock.now
        for disk in device.emulated?.disks ?? [] where disk.usesOverlay {
            let path = hotplugOverlayPath(disk)
            do {
                try await FreshOverlay.create(
                    overlay: path, base: disk.image, baseFormat: disk.format,
                    templateDirectory: overlayTemplateDirectory, name: disk.id)
            } catch {
                for made in overlays.values { FileSystem.remove(made) }
                throw DeviceError.overlay(device: deviceName, message: error.description)
            }
            overlays[disk.id] = path
        }
        if !overlays.isEmpty { timings.record("overlay", since: start) }

        // The slot and option spellings planned at boot (the session's placement, the record's capabilities).
        guard let placement = placement?.placement(of: deviceName) else {
            for made in overlays.values { FileSystem.remove(made) }
            throw DeviceError.qemuRefused(device: deviceName, command: "placement", message: "no slot planned", diagnoses: [])
        }
        // A passthrough card goes to the host device resolved when the lab was planned (`ids:` included).
        var placed = device
        if var passthrough = device.passthrough,
            let planned = record.passthroughHosts.first(where: { $0.device == deviceName }).flatMap({ PCIAddress($0.host) })
        {
            passthrough.host = .address(planned)
            placed.kind = .passthrough(passthrough)
        }
        let attachment: DeviceAttachment
        do {
            attachment = try placed.attachment(
                placement: placement, diskOverlays: overlays, sysfsRoot: "/sys", rombar: record.capabilities.rombar)
        } catch {
            for made in overlays.values { FileSystem.remove(made) }
            throw error
        }

        var addedNodes: [String] = []
        var addedDevices: [String] = []
        do {
            for node in attachment.blockdevs {
                start = ContinuousClock.now
                guard case .object(let arguments) = node.blockdevAddArguments else { continue }
                try await qmpStep(deviceName, "blockdev-add") { _ = try await qmp.execute("blockdev-add", arguments: arguments) }
                addedNodes.append(node.nodeName)
                timings.record("blockdev-add \(node.nodeName)", since: start)
            }
            for spec in attachment.devices {
                start = ContinuousClock.now
                guard case .object(let arguments) = spec.deviceAddArguments else { continue }
                try await qmpStep(deviceName, "device_add \(spec.driver)") { _ = try await qmp.execute("device_add", arguments: arguments) }
                addedDevices.append(spec.id)
                timings.record("device_add \(spec.id)", since: start)
            }
        } catch {
            await rollBack(devices: addedDevices, nodes: addedNodes)
            for made in overlays.values { FileSystem.remove(made) }
            if let error = error as? DeviceError, case .qemuRefused(_, _, let message, _) = error, message.contains("Duplicate nodes") || message.contains("Duplicate device ID '\(deviceName)'") {
                throw DeviceError.alreadyAttached(device: deviceName, state: "QEMU already has it: \(message)", lab: lab.name)
            }
            throw error
        }
        return AttachResult(
            device: deviceName, driver: attachment.devices.first?.driver ?? "", placement: placement, overlays: overlays,
            deviceIDs: attachment.devices.map(\.id), timings: timings)
    }

    // MARK: Shared by attach and detach

    /// The lab's device named, or ``DeviceError/unknownDevice(device:lab:available:)``.
    func labDevice(_ name: String) throws -> LabDevice {
        guard let device = lab.device(named: name) else {
            throw DeviceError.unknownDevice(device: name, lab: lab.name, available: lab.devices.map(\.name))
        }
        return device
    }

    /// The device's state in the lab record now (``currentRecord``), nil when unknown.
    public func currentDeviceState(_ name: String) -> DeviceState? {
        currentRecord.devices.first { $0.name == name }?.state
    }

    /// Names of the lab's devices attached now, per the lab record, in lab order.
    public func attachedDevices() -> [String] {
        lab.devices.map(\.name).filter { currentDeviceState($0)?.isAttached ?? false }
    }

    /// `STATE/LAB/GUEST/hotplug/DISK-ID.qcow2`: the overlay of a hotplugged disk.
    func hotplugOverlayPath(_ disk: EmulatedDisk) -> String {
        runtime.stateDirectory + "/" + record.guest + "/hotplug/" + disk.id + ".qcow2"
    }

    /// Removes the overlays of `device`'s hotplugged disks (their writes go
    /// with the device); returns the paths removed.
    func removeHotplugOverlays(of device: LabDevice) -> [String] {
        var removed: [String] = []
        for disk in device.emulated?.disks ?? [] {
            let path = hotplugOverlayPath(disk)
            if FileSystem.entryExists(path) {
                FileSystem.remove(path)
                removed.append(path)
            }
        }
        return removed
    }

    /// `STATE/LAB/overlay-templates`.
    var overlayTemplateDirectory: String { runtime.stateDirectory + "/overlay-templates" }

    /// Runs one QMP step; a QEMU error becomes ``DeviceError/qemuRefused(device:command:message:diagnoses:)``.
    func qmpStep(_ device: String, _ command: String, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as QMPError {
            if case .command(_, _, let message) = error {
                throw DeviceError.qemuRefused(device: device, command: command, message: message, diagnoses: Diagnoser.diagnose(message))
            }
            throw error
        }
    }

    /// Best effort after a failed attach: the scsi-hd disks go at once; a
    /// PCI controller needs the unplug handshake: the guest gets 10 s (or
    /// none when the VM is not running), then a reset completes it.
    func rollBack(devices: [String], nodes: [String]) async {
        if let controller = devices.first {
            for disk in devices.dropFirst().reversed() { _ = try? await qmp.execute("device_del", arguments: ["id": .string(disk)]) }
            let mark = qmp.eventMark()
            if (try? await qmp.execute("device_del", arguments: ["id": .string(controller)])) != nil {
                let running = (try? await qmp.queryStatus().running) ?? false
                let outcome = running ? try? await waitForUnplug(controller, after: mark, timeout: .seconds(10)) : nil
                if outcome != .deleted {
                    _ = try? await qmp.execute("system_reset")
                    _ = try? await qmp.waitForEvent("DEVICE_DELETED", matching: ["device": .string(controller)], after: mark, timeout: .seconds(5))
                }
            }
        }
        for node in nodes.reversed() {
            let deadline = ContinuousClock.now + .seconds(5)
            var delay = Self.firstNodeRetry
            while true {
                do {
                    _ = try await qmp.execute("blockdev-del", arguments: ["node-name": .string(node)])
                    break
                } catch QMPError.command(_, _, let message) where message.contains("is in use") && ContinuousClock.now < deadline {
                    try? await Task.sleep(for: delay)
                    delay = Self.nextNodeRetry(after: delay)
                } catch {
                    break
                }
            }
        }
    }

    /// Retries of `blockdev-del` while QEMU says a node "is in use" are a real
    /// delay, not a missed event: QEMU releases a deleted device's node when it
    /// finalises the device, a little after DEVICE_DELETED, and no QMP event
    /// says when. The usual wait is a few ms, so the delay starts at 1 ms and
    /// doubles up to 32 ms.
    static let firstNodeRetry = Duration.milliseconds(1)

    static func nextNodeRetry(after delay: Duration) -> Duration {
        min(delay * 2, .milliseconds(32))
    }

    /// Ids of the devices created with an id (`qom-list /machine/peripheral`).
    ///
    /// Used to tell whether a device exists: `query-pci` does not list cards
    /// behind a bridge whose secondary bus number the firmware has not set
    /// yet (a VM started with -S that never ran), while QOM always has them.
    public func peripheralIDs() async throws -> Set<String> {
        let reply = try await qmp.execute("qom-list", arguments: ["path": "/machine/peripheral"])
        return Set((reply.arrayValue ?? []).compactMap { entry in
            entry["type"]?.stringValue?.hasPrefix("child<") == true ? entry["name"]?.stringValue : nil
        })
    }

    /// `blockdev-del` of every node of the device's disks that exists, ignoring errors.
    func removeBlockNodes(of device: LabDevice) async {
        _ = try? await deleteBlockNodes(of: device)
    }

    /// `blockdev-del` of the device's disk nodes, format node first; a node
    /// that does not exist is skipped.
    ///
    /// QEMU releases a deleted scsi-hd's hold on its node a little after the
    /// device is gone (its finalisation is deferred; measured on 7.2: right
    /// after a reset-completed unplug `blockdev-del` answers "Node ... is in
    /// use", a few ms later it succeeds), so "in use" is retried for up to `patience`.
    func deleteBlockNodes(of device: LabDevice, patience: Duration = .seconds(5)) async throws {
        let deadline = ContinuousClock.now + patience
        for disk in device.emulated?.disks ?? [] {
            for node in [disk.formatNodeName, disk.fileNodeName] {
                var delay = Self.firstNodeRetry
                while true {
                    do {
                        _ = try await qmp.execute("blockdev-del", arguments: ["node-name": .string(node)])
                        break
                    } catch QMPError.command(_, _, let message) where message.contains("Failed to find node") || message.contains("not found") {
                        break
                    } catch QMPError.command(_, _, let message) where message.contains("is in use") && ContinuousClock.now < deadline {
                        try await Task.sleep(for: delay)
                        delay = Self.nextNodeRetry(after: delay)
                    } catch QMPError.command(_, _, let message) {
                        throw DeviceError.qemuRefused(device: device.name, command: "blockdev-del \(node)", message: message, diagnoses: [])
                    }
                }
            }
        }
    }
}
