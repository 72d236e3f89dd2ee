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
        public static let panic = "qlab-pvpanic"
    }

    /// Unix socket paths must fit `sockaddr_un.sun_path` (108 bytes with the NUL).
    public static let maxSocketPathBytes = 107

    /// Builds the command line for `guest` (nil: the lab's first guest).
    /// `placement`: the plan's placement (``LaunchPlan``), else computed here.
    /// The options come in this order, one function each: machine, monitors
    /// and console, display, panic device, firmware, kernel, bridges, guest disk, network,
    /// boot-attached devices, then the lab's and the guest's `qemu_args`.
    public static func build(
        lab: Lab, guest guestName: String?, runtime: QEMURuntime, placement: PlacementPlan? = nil
    ) throws(QEMUCommandLineError) -> QEMUCommandLine {
        let guest: LabGuest
        do { guest = try lab.selectGuest(guestName) } catch { throw .lab(error) }
        let plan: PlacementPlan
        if let placement {
            plan = placement
        } else {
            do { plan = try lab.placement(for: guest) } catch { throw .lab(error) }
        }
        var args = machineArguments(lab: lab, guest: guest, runtime: runtime)
        args += try monitorAndConsoleArguments(runtime: runtime, plan: plan)
        args += displayArguments(lab: lab, guest: guest, plan: plan)
        args += panicArguments(guest: guest)
        args += try firmwareArguments(guest: guest, runtime: runtime)
        args += kernelArguments(guest: guest)
        for bridge in plan.bridges { args += ["-device", bridge.optionValue] }
        args += try guestDiskArguments(guest: guest, runtime: runtime, plan: plan)
        args += networkArguments(guest: guest, plan: plan)
        args += try bootDeviceArguments(lab: lab, guest: guest, runtime: runtime, plan: plan)
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
