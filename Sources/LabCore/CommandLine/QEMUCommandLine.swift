/// The QEMU invocation for one guest of a lab: what `qlab up` runs and
/// `qlab args` prints.
public struct QEMUCommandLine: Sendable, Hashable {
    /// The emulator (lab `qemu:`), as given: a path, or a name for PATH lookup.
    public var executable: String
    /// Everything after the executable.
    public var arguments: [String]
    /// Where each device went (hotplug uses the same plan).
    public var placement: PlacementPlan
    public var accel: AccelDecision

    /// executable + arguments.
    public var argv: [String] { [executable] + arguments }

    /// The invocation as a shell reads it back; `multiline` puts each option on its own line.
    public func shellQuoted(multiline: Bool = false) -> String {
        ShellQuoting.join(argv, multiline: multiline)
    }

    /// QEMU ids qlab uses for its own devices and chardevs.
    public enum IDs {
        public static let qmp = "qlab-qmp"
        public static let supervisorQMP = "qlab-qmp-supervisor"
        public static let console = "qlab-console"
        public static let agent = "qlab-qga"
        public static let agentSerial = "qlab-virtio-serial"
        public static let agentPort = "qlab-qga-port"
        public static let disk = "qlab-disk"
        public static let diskFormatNode = "qlab-disk-fmt"
        public static let diskFileNode = "qlab-disk-file"
        public static let ahci = "qlab-ahci"
        public static let netdev = "qlab-net0"
        public static let nic = "qlab-nic0"
    }

    /// Unix socket paths must fit `sockaddr_un.sun_path` (108 bytes with the NUL).
    public static let maxSocketPathBytes = 107

    /// Builds the command line for `guest` (nil: the lab's first guest).
    /// `placement`: the plan's placement (``LaunchPlan``), else computed here.
    public static func build(
        lab: Lab, guest guestName: String?, runtime: QEMURuntime, placement: PlacementPlan? = nil
    ) throws(QEMUCommandLineError) -> QEMUCommandLine {
        let guest: LabGuest
        do { guest = try lab.selectGuest(guestName) } catch { throw .lab(error) }
        let machine = lab.machineSettings(for: guest)
        let plan: PlacementPlan
        if let placement {
            plan = placement
        } else {
            do { plan = try lab.placement(for: guest) } catch { throw .lab(error) }
        }
        let kvm = runtime.accel.accelerator == .kvm

        var args: [String] = []
        func add(_ option: String, _ value: String) { args += [option, value] }

        add("-name", QEMUOptions.join(lab.name, [("process", .string("qlab-" + lab.name))]))
        var machineOptions: [(String, QEMUValue)] = [("accel", .string(runtime.accel.accelerator.rawValue))]
        if runtime.ramFile != nil { machineOptions.append(("memory-backend", .string(RAMFiles.backendID))) }
        add("-machine", QEMUOptions.join(machine.type, machineOptions))
        // `-cpu host` needs KVM; TCG's closest is `max`.
        var cpu = machine.cpu ?? (kvm ? "host" : "max")
        if !kvm, cpu == "host" { cpu = "max" }
        add("-cpu", cpu)
        add("-m", "\(machine.memory.mebibytes)M")
        if let ramFile = runtime.ramFile {
            // Guest RAM in a file the fast revert copies and maps (docs/devices-snapshots.md).
            add("-object", RAMFiles.backendOption(path: ramFile, memoryMiB: Int(machine.memory.mebibytes), shared: true))
        }
        add("-smp", String(machine.smp))
        args += ["-nodefaults", "-no-user-config"]
        add("-display", "none")
        if runtime.startPaused { args.append("-S") }

        // Monitors and console: Unix socket servers QEMU creates itself.
        var sockets: [(String, String)] = [(IDs.qmp, runtime.qmpSocket)]
        if let supervisor = runtime.supervisorSocket { sockets.append((IDs.supervisorQMP, supervisor)) }
        if let agent = runtime.agentSocket { sockets.append((IDs.agent, agent)) }
        sockets.append((IDs.console, runtime.serialSocket))
        for (_, path) in sockets where path.utf8.count > maxSocketPathBytes {
            throw .runtime("socket path \(path) is \(path.utf8.count) bytes; Unix sockets allow \(maxSocketPathBytes). Use a shorter runtime directory (QLAB_RUNTIME_DIR)")
        }
        for (id, path) in sockets.dropLast() where id != IDs.agent {
            add("-chardev", QEMUOptions.join("socket", [("id", .string(id)), ("path", .string(path)), ("server", .bool(true)), ("wait", .bool(false))]))
            add("-mon", QEMUOptions.join(nil, [("chardev", .string(id)), ("mode", .string("control"))]))
        }
        var console: [(String, QEMUValue)] = [
            ("id", .string(IDs.console)), ("path", .string(runtime.serialSocket)), ("server", .bool(true)), ("wait", .bool(false)),
        ]
        if let log = runtime.serialLog { console += [("logfile", .string(log)), ("logappend", .bool(true))] }
        add("-chardev", QEMUOptions.join("socket", console))
        add("-serial", "chardev:" + IDs.console)
        // The guest agent: qemu-ga in the guest opens the virtio-serial port named org.qemu.guest_agent.0.
        if let agent = runtime.agentSocket {
            add("-chardev", QEMUOptions.join("socket", [("id", .string(IDs.agent)), ("path", .string(agent)), ("server", .bool(true)), ("wait", .bool(false))]))
            add("-device", QEMUDeviceSpec(driver: "virtio-serial-pci", id: IDs.agentSerial, properties: [("bus", .string(plan.family.rootBus)), ("addr", .string(DevicePlacement.agentSlot.description))]).optionValue)
            add("-device", QEMUDeviceSpec(driver: "virtserialport", id: IDs.agentPort, properties: [("chardev", .string(IDs.agent)), ("name", .string("org.qemu.guest_agent.0"))]).optionValue)
        }
        if let pidFile = runtime.pidFile { add("-pidfile", pidFile) }
        // A display adapter QEMU draws into without a window: for screendump and the text screen.
        if lab.display(for: guest) == .vga {
            add("-device", QEMUDeviceSpec(driver: "VGA", id: DisplayAdapter.id, properties: [("bus", .string(plan.family.rootBus)), ("addr", .string(DisplayAdapter.slot.description))]).optionValue)
        }

        // Firmware.
        switch guest.effectiveFirmware {
        case .uefi:
            guard let vars = runtime.firmwareVars else {
                throw .runtime("guest \(guest.name) boots UEFI and needs a per-lab variable store (QEMURuntime.firmwareVars; create it with FirmwareVariables.create)")
            }
            let code = guest.firmwareCode ?? OSProfile.ovmfCode
            add("-drive", QEMUOptions.join(nil, [("if", .string("pflash")), ("format", .string("raw")), ("unit", .int(0)), ("readonly", .bool(true)), ("file", .string(code))]))
            add("-drive", QEMUOptions.join(nil, [("if", .string("pflash")), ("format", .string("qcow2")), ("unit", .int(1)), ("file", .string(vars))]))
        case .bios:
            if let bios = guest.bios { add("-bios", bios) }
        }

        // Direct kernel boot: these options take the path as is (no QemuOpts parsing).
        if let kernel = guest.kernel {
            add("-kernel", kernel)
            if let initrd = guest.initrd { add("-initrd", initrd) }
            if let append = guest.append ?? guest.profile.defaultAppend { add("-append", append) }
        }

        for bridge in plan.bridges { add("-device", bridge.optionValue) }

        // The guest disk: a qcow2 overlay whose backing file is the base image.
        if let base = guest.disk {
            guard let overlay = runtime.diskOverlay else {
                throw .runtime("guest \(guest.name) has disk \(base) but no overlay was given (QEMURuntime.diskOverlay; create it with DiskOverlay.create)")
            }
            add("-blockdev", QEMUBlockdevSpec.file(overlay, nodeName: IDs.diskFileNode).optionValue)
            add("-blockdev", QEMUBlockdevSpec.format("qcow2", over: IDs.diskFileNode, nodeName: IDs.diskFormatNode).optionValue)
            for device in diskDevices(interface: guest.effectiveDiskInterface, family: plan.family, placement: plan.guestDisk) {
                add("-device", device.optionValue)
            }
        }

        if guest.network == .user {
            add("-netdev", QEMUOptions.join("user", [("id", .string(IDs.netdev))]))
            add("-device", QEMUDeviceSpec(driver: guest.profile.nicModel, id: IDs.nic, properties: [("netdev", .string(IDs.netdev))] + plan.nic.properties).optionValue)
        }

        for device in lab.devices where lab.effectiveAttach(of: device, for: guest) == .boot {
            guard let placement = plan.placement(of: device.name) else { continue }
            args += try device.attachment(
                placement: placement, diskOverlays: runtime.deviceDiskOverlays, sysfsRoot: runtime.sysfsRoot, rombar: runtime.rombar
            ).commandLineArguments
        }

        args += lab.qemuArgs
        args += guest.qemuArgs
        return QEMUCommandLine(executable: lab.qemu, arguments: args, placement: plan, accel: runtime.accel)
    }

    /// The devices that present the guest disk (format node ``IDs/diskFormatNode``) on `interface`.
    static func diskDevices(interface: DiskInterface, family: MachineFamily, placement: PCIPlacement) -> [QEMUDeviceSpec] {
        let drive: [(String, QEMUValue)] = [("drive", .string(IDs.diskFormatNode))]
        switch (interface, family) {
        case (.virtio, _):
            return [QEMUDeviceSpec(driver: "virtio-blk-pci", id: IDs.disk, properties: drive + placement.properties + [("bootindex", .int(1))])]
        case (.ahci, .q35), (.ide, .q35), (.ide, .pc):
            // q35's built-in ICH9 AHCI and pc's PIIX IDE both name their first port ide.0.
            return [QEMUDeviceSpec(driver: "ide-hd", id: IDs.disk, properties: drive + [("bus", .string("ide.0")), ("bootindex", .int(1))])]
        case (.ahci, .pc):
            return [
                QEMUDeviceSpec(driver: "ahci", id: IDs.ahci, properties: placement.properties),
                QEMUDeviceSpec(driver: "ide-hd", id: IDs.disk, properties: drive + [("bus", .string(IDs.ahci + ".0")), ("bootindex", .int(1))]),
            ]
        }
    }
}
