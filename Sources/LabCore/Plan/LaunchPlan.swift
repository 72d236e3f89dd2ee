import Platform

/// Everything decided for one launch of a lab, once: what `qlab args`
/// prints, what `up` (and `up --foreground`, `run`) starts, and what hotplug
/// places devices by. Made by ``LabPlanner``; its decisions are kept in the
/// lab record (``LabRecord``) when QEMU starts, so later commands work from
/// them instead of re-reading the lab file.
public struct LaunchPlan: Sendable {
    /// The lab as read when planning (later edits of its file do not reach a running lab).
    public var lab: Lab
    public var guest: LabGuest
    public var machine: ResolvedMachine
    /// The accelerator and why.
    public var accel: AccelDecision
    public var capabilities: QEMUCapabilities
    /// Sockets, logs and overlays of this launch.
    public var layout: QEMURuntime
    /// The QEMU invocation (with the placement of every device).
    public var commandLine: QEMUCommandLine
    /// Each lab device's state when QEMU starts.
    public var deviceStates: [(name: String, state: DeviceState)]
    /// Host PCI addresses of passthrough devices (`ids:` resolved).
    public var passthroughHosts: [(device: String, host: String)]
    /// The revert method, why, and the RAM directory (``LabPlanner/revertDecision(lab:guest:memory:)``).
    public var revert: RevertRecord

    public var argv: [String] { commandLine.argv }
    /// Where each device goes, at boot and at hotplug.
    public var placement: PlacementPlan { commandLine.placement }

    /// The record `up` starts from (pids are filled in by the supervisor).
    public func record(foreground: Bool = false) -> LabRecord {
        var record = LabRecord(
            name: lab.name, labFile: lab.file, guest: guest.name, qemuPID: 0, supervisorPID: 0, foreground: foreground,
            startedAt: wallClockSeconds(), accel: accel, consoleLog: layout.serialLog, devices: deviceStates,
            passthroughHosts: passthroughHosts, qemuLogOffset: 0,
            consoleLogOffset: layout.serialLog.flatMap(FileSystem.size) ?? 0)
        record.labSource = lab.source.isEmpty ? nil : lab.source
        record.capabilities = capabilities
        record.argv = argv
        record.revert = revert
        return record
    }
}

/// Makes ``LaunchPlan``s: the one place that resolves a lab for a launch.
public struct LabPlanner: Sendable {
    public var runtimeRoot: String
    public var stateRoot: String
    /// Where host devices are looked up (accelerator, `ids:`).
    public var hostRoots: HostRoots
    public var environment: [String: String]

    public init(runtimeRoot: String, stateRoot: String, hostRoots: HostRoots = .live, environment: [String: String] = currentEnvironment()) {
        self.runtimeRoot = runtimeRoot
        self.stateRoot = stateRoot
        self.hostRoots = hostRoots
        self.environment = environment
    }

    /// The planner for the standard directories of `environment`.
    public init(environment: [String: String] = currentEnvironment(), hostRoots: HostRoots = .live) {
        let runtime = LabRuntime(name: "", environment: environment)
        self.init(runtimeRoot: runtime.runtimeRoot, stateRoot: runtime.stateRoot, hostRoots: hostRoots, environment: environment)
    }

    public struct Options: Sendable, Hashable {
        /// `-S`: start with the CPUs stopped.
        public var paused = false
        public var overlays: OverlaySet = .lab
        /// Devices of the lab this launch leaves off the command line (recorded
        /// `detached`): a device dimension's others (``Lab/devicesLeftOut(for:device:)``).
        public var leftOutDevices: [String] = []
        public init(paused: Bool = false, overlays: OverlaySet = .lab, leftOutDevices: [String] = []) {
            self.paused = paused
            self.overlays = overlays
            self.leftOutDevices = leftOutDevices
        }
    }

    /// Plans the launch of `lab` with `guest` (nil: its first guest).
    public func plan(lab: Lab, guest guestName: String?, options: Options = Options()) throws -> LaunchPlan {
        let guest = try lab.selectGuest(guestName)
        let machine = lab.machineSettings(for: guest)
        let accel = AccelDecision.decide(machine.accel, devRoot: hostRoots.devfs, sysRoot: hostRoots.sysfs)
        // The state root when it exists and is private (planning creates nothing).
        let cacheDirectory = (try? PrivateDirectory.open(stateRoot, role: .state, create: false)) ?? nil
        let capabilities = QEMUCapabilities.probe(for: lab, environment: environment, cache: cacheDirectory)
        // What QEMU starts with: the lab without the devices this launch leaves out.
        var launched = lab
        launched.devices.removeAll { options.leftOutDevices.contains($0.name) }
        var layout = QEMURuntime.standard(
            lab: launched, guest: guest, runtimeDirectory: runtimeRoot, stateDirectory: stateRoot, accel: accel, overlays: options.overlays)
        layout.startPaused = options.paused
        layout.sysfsRoot = hostRoots.sysfs
        layout.rombar = capabilities.rombar
        let revert = revertDecision(lab: lab, guest: guest, memory: machine.memory)
        try Self.refuseSecondDC390Plug(lab: lab, guest: guest, revert: revert, capabilities: capabilities)
        if revert.method == .fast { layout.ramFile = revert.liveFile }
        let commandLine = try QEMUCommandLine.build(lab: launched, guest: guest.name, runtime: layout, placement: try launched.placement(for: guest))
        let states = lab.devices.map { device in
            (name: device.name, state: launched.devices.contains(device) && lab.effectiveAttach(of: device, for: guest) == .boot ? DeviceState.boot : .detached)
        }
        let hosts = passthroughHosts(of: launched)
        return LaunchPlan(
            lab: lab, guest: guest, machine: machine, accel: accel, capabilities: capabilities, layout: layout,
            commandLine: commandLine, deviceStates: states, passthroughHosts: hosts, revert: revert)
    }

    /// The host device each passthrough device of `lab` goes to (``resolveHost(_:)``),
    /// the selector as written when no device matches it.
    func passthroughHosts(of lab: Lab) -> [(device: String, host: String)] {
        lab.devices.compactMap { device -> (device: String, host: String)? in
            guard let passthrough = device.passthrough else { return nil }
            return (device.name, resolveHost(passthrough.host)?.description ?? passthrough.host.description)
        }
    }

    /// The host cards a launch of `lab` reserves (``CardReservation``): its
    /// passthrough devices but those the launch leaves out, resolved as ``plan(lab:guest:options:)`` does.
    public func reservedCards(of lab: Lab, leftOutDevices: [String] = []) -> [PCIAddress] {
        var launched = lab
        launched.devices.removeAll { leftOutDevices.contains($0.name) }
        return passthroughHosts(of: launched).compactMap { PCIAddress($0.host) }
    }

    func resolveHost(_ selector: Passthrough.HostSelector) -> PCIAddress? {
        switch selector {
        case .address(let address): return address
        case .ids(let vendor, let device):
            return DeviceSelector.ids(vendor: vendor, device: device).resolve(in: Sysfs(roots: hostRoots)).first?.address
        }
    }
}
