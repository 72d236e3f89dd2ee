/// The parts of ``QEMUCommandLine/build(lab:guest:runtime:placement:)``, in
/// the order they appear on the command line.
extension QEMUCommandLine {
    /// `-name`, `-machine`, `-cpu`, `-m` (and the RAM file of a fast-revert
    /// lab), `-smp`, no defaults, no display window, `-S` when paused.
    static func machineArguments(lab: Lab, guest: LabGuest, runtime: QEMURuntime) -> [String] {
        let machine = lab.machineSettings(for: guest)
        let kvm = runtime.accel.accelerator == .kvm
        var args = ["-name", QEMUOptions.join(lab.name, [("process", .string("qlab-" + lab.name))])]
        var machineOptions: [(String, QEMUValue)] = [("accel", .string(runtime.accel.accelerator.rawValue))]
        if runtime.ramFile != nil { machineOptions.append(("memory-backend", .string(RAMFiles.backendID))) }
        args += ["-machine", QEMUOptions.join(machine.type, machineOptions)]
        // `-cpu host` needs KVM; TCG's closest is `max`.
        var cpu = machine.cpu ?? (kvm ? "host" : "max")
        if !kvm, cpu == "host" { cpu = "max" }
        args += ["-cpu", cpu, "-m", "\(machine.memory.mebibytes)M"]
        if let ramFile = runtime.ramFile {
            // Guest RAM in a file the fast revert copies and maps (docs/devices-snapshots.md).
            args += ["-object", RAMFiles.backendOption(path: ramFile, memoryMiB: Int(machine.memory.mebibytes), shared: true)]
        }
        args += ["-smp", String(machine.smp), "-nodefaults", "-no-user-config", "-display", "none"]
        if runtime.startPaused { args.append("-S") }
        return args
    }

    /// The QMP monitors, the serial console (logged) and the guest agent's
    /// channel: Unix socket servers QEMU creates itself; then `-pidfile`.
    static func monitorAndConsoleArguments(runtime: QEMURuntime, plan: PlacementPlan) throws(QEMUCommandLineError) -> [String] {
        var sockets: [(String, String)] = [(IDs.qmp, runtime.qmpSocket)]
        if let supervisor = runtime.supervisorSocket { sockets.append((IDs.supervisorQMP, supervisor)) }
        if let agent = runtime.agentSocket { sockets.append((IDs.agent, agent)) }
        sockets.append((IDs.console, runtime.serialSocket))
        for (_, path) in sockets where path.utf8.count > maxSocketPathBytes {
            throw .runtime("socket path \(path) is \(path.utf8.count) bytes; Unix sockets allow \(maxSocketPathBytes). Use a shorter runtime directory (QLAB_RUNTIME_DIR)")
        }
        var args: [String] = []
        for (id, path) in sockets.dropLast() where id != IDs.agent {
            args += ["-chardev", QEMUOptions.join("socket", [("id", .string(id)), ("path", .string(path)), ("server", .bool(true)), ("wait", .bool(false))])]
            args += ["-mon", QEMUOptions.join(nil, [("chardev", .string(id)), ("mode", .string("control"))])]
        }
        var console: [(String, QEMUValue)] = [
            ("id", .string(IDs.console)), ("path", .string(runtime.serialSocket)), ("server", .bool(true)), ("wait", .bool(false)),
        ]
        if let log = runtime.serialLog { console += [("logfile", .string(log)), ("logappend", .bool(true))] }
        args += ["-chardev", QEMUOptions.join("socket", console), "-serial", "chardev:" + IDs.console]
        // The guest agent: qemu-ga in the guest opens the virtio-serial port named org.qemu.guest_agent.0.
        if let agent = runtime.agentSocket {
            args += ["-chardev", QEMUOptions.join("socket", [("id", .string(IDs.agent)), ("path", .string(agent)), ("server", .bool(true)), ("wait", .bool(false))])]
            args += ["-device", QEMUDeviceSpec(driver: "virtio-serial-pci", id: IDs.agentSerial, properties: [("bus", .string(plan.family.rootBus)), ("addr", .string(DevicePlacement.agentSlot.description))]).optionValue]
            args += ["-device", QEMUDeviceSpec(driver: "virtserialport", id: IDs.agentPort, properties: [("chardev", .string(IDs.agent)), ("name", .string("org.qemu.guest_agent.0"))]).optionValue]
        }
        if let pidFile = runtime.pidFile { args += ["-pidfile", pidFile] }
        return args
    }

    /// A display adapter QEMU draws into without a window: for screendump and the text screen.
    static func displayArguments(lab: Lab, guest: LabGuest, plan: PlacementPlan) -> [String] {
        guard lab.display(for: guest) == .vga else { return [] }
        return ["-device", QEMUDeviceSpec(driver: "VGA", id: DisplayAdapter.id, properties: [("bus", .string(plan.family.rootBus)), ("addr", .string(DisplayAdapter.slot.description))]).optionValue]
    }

    /// The ISA pvpanic device (I/O port 0x505, ACPI QEMU0001) for an OS that
    /// has its driver (``OSProfile/panicDevice``), and `-action panic=none`:
    /// QEMU only says GUEST_PANICKED, and the guest does what its own
    /// `panic=` tells it (QEMU's default would power it off).
    static func panicArguments(guest: LabGuest) -> [String] {
        guard guest.profile.panicDevice else { return [] }
        return ["-device", QEMUDeviceSpec(driver: "pvpanic", id: IDs.panic, properties: []).optionValue, "-action", "panic=none"]
    }

    /// UEFI's two pflash drives (code read-only, the lab's variable store), or `-bios`.
    static func firmwareArguments(guest: LabGuest, runtime: QEMURuntime) throws(QEMUCommandLineError) -> [String] {
        switch guest.effectiveFirmware {
        case .uefi:
            guard let vars = runtime.firmwareVars else {
                throw .runtime("guest \(guest.name) boots UEFI and needs a per-lab variable store (QEMURuntime.firmwareVars; create it with FirmwareVariables.create)")
            }
            let code = guest.firmwareCode ?? OSProfile.ovmfCode
            return [
                "-drive", QEMUOptions.join(nil, [("if", .string("pflash")), ("format", .string("raw")), ("unit", .int(0)), ("readonly", .bool(true)), ("file", .string(code))]),
                "-drive", QEMUOptions.join(nil, [("if", .string("pflash")), ("format", .string("qcow2")), ("unit", .int(1)), ("file", .string(vars))]),
            ]
        case .bios:
            return guest.bios.map { ["-bios", $0] } ?? []
        }
    }

    /// Direct kernel boot: these options take the path as is (no QemuOpts parsing).
    static func kernelArguments(guest: LabGuest) -> [String] {
        guard let kernel = guest.kernel else { return [] }
        var args = ["-kernel", kernel]
        if let initrd = guest.initrd { args += ["-initrd", initrd] }
        if let append = guest.append ?? guest.profile.defaultAppend { args += ["-append", append] }
        return args
    }

    /// The guest disk: a qcow2 overlay whose backing file is the base image.
    static func guestDiskArguments(guest: LabGuest, runtime: QEMURuntime, plan: PlacementPlan) throws(QEMUCommandLineError) -> [String] {
        guard let base = guest.disk else { return [] }
        guard let overlay = runtime.diskOverlay else {
            throw .runtime("guest \(guest.name) has disk \(base) but no overlay was given (QEMURuntime.diskOverlay; create it with DiskOverlay.create)")
        }
        var args = [
            "-blockdev", QEMUBlockdevSpec.file(overlay, nodeName: IDs.diskFileNode).optionValue,
            "-blockdev", QEMUBlockdevSpec.format("qcow2", over: IDs.diskFileNode, nodeName: IDs.diskFormatNode).optionValue,
        ]
        for device in diskDevices(interface: guest.effectiveDiskInterface, family: plan.family, placement: plan.guestDisk) {
            args += ["-device", device.optionValue]
        }
        return args
    }

    /// User-mode networking and the guest profile's NIC.
    static func networkArguments(guest: LabGuest, plan: PlacementPlan) -> [String] {
        guard guest.network == .user else { return [] }
        return [
            "-netdev", QEMUOptions.join("user", [("id", .string(IDs.netdev))]),
            "-device", QEMUDeviceSpec(driver: guest.profile.nicModel, id: IDs.nic, properties: [("netdev", .string(IDs.netdev))] + plan.nic.properties).optionValue,
        ]
    }

    /// The lab devices attached at boot for `guest`, at their planned places.
    static func bootDeviceArguments(lab: Lab, guest: LabGuest, runtime: QEMURuntime, plan: PlacementPlan) throws(QEMUCommandLineError) -> [String] {
        var args: [String] = []
        for device in lab.devices where lab.effectiveAttach(of: device, for: guest) == .boot {
            guard let placement = plan.placement(of: device.name) else { continue }
            args += try device.attachment(
                placement: placement, diskOverlays: runtime.deviceDiskOverlays, sysfsRoot: runtime.sysfsRoot, rombar: runtime.rombar
            ).commandLineArguments
        }
        return args
    }
}
