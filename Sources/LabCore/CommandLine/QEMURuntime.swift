/// What a QEMU invocation needs beyond the lab file: where its sockets,
/// logs and overlays are, and which accelerator it runs with.
///
/// ``standard(lab:guest:runtimeDirectory:stateDirectory:accel:)`` is the
/// layout `qlab up` uses, so `qlab args` prints exactly what `up` runs.
public struct QEMURuntime: Sendable, Hashable {
    /// The QMP monitor for users and commands (`qlab qmp`, hotplug, snapshots).
    public var qmpSocket: String
    /// A second QMP monitor, owned by the supervisor (events, exit); nil for none.
    public var supervisorSocket: String?
    /// The guest agent's channel as a Unix socket server; nil for none (the guest's `agent:`).
    public var agentSocket: String?
    /// The serial console (ttyS0) as a Unix socket server.
    public var serialSocket: String
    /// Everything the console prints, appended (QEMU's chardev `logfile=`).
    public var serialLog: String?
    /// `-pidfile`.
    public var pidFile: String?
    /// The qcow2 overlay over the guest's base disk; required when the guest has `disk:`.
    public var diskOverlay: String?
    /// Overlays for disks of devices attached at boot, by disk id; a disk without
    /// one is opened read-only (its base image is never written).
    public var deviceDiskOverlays: [String: String]
    /// The guest's UEFI variable store (a qcow2 copy of the template, so the VM stays snapshottable).
    public var firmwareVars: String?
    public var accel: AccelDecision
    /// `-S`: start with the CPUs stopped.
    public var startPaused: Bool
    /// Where host PCI devices are looked up for `ids:` selectors.
    public var sysfsRoot: String
    /// How this QEMU spells vfio-pci's `rombar` (``RombarSpelling/probe(qemu:)``).
    public var rombar: RombarSpelling
    /// Guest RAM in this file, shared (`-object memory-backend-file,id=pc.ram,...,share=on`,
    /// `-machine memory-backend=pc.ram`): the fast revert method. nil: plain `-m`.
    public var ramFile: String?

    public init(
        qmpSocket: String, supervisorSocket: String? = nil, serialSocket: String, serialLog: String? = nil,
        pidFile: String? = nil, diskOverlay: String? = nil, deviceDiskOverlays: [String: String] = [:],
        firmwareVars: String? = nil, accel: AccelDecision, startPaused: Bool = false, sysfsRoot: String = "/sys",
        rombar: RombarSpelling = .number
    ) {
        self.qmpSocket = qmpSocket
        self.supervisorSocket = supervisorSocket
        self.agentSocket = nil
        self.serialSocket = serialSocket
        self.serialLog = serialLog
        self.pidFile = pidFile
        self.diskOverlay = diskOverlay
        self.deviceDiskOverlays = deviceDiskOverlays
        self.firmwareVars = firmwareVars
        self.accel = accel
        self.startPaused = startPaused
        self.sysfsRoot = sysfsRoot
        self.rombar = rombar
    }

    /// The standard layout:
    ///
    ///     RUNTIME/LAB/qmp.sock  supervisor.sock  console.sock  qemu.pid
    ///     STATE/LAB/GUEST/disk.qcow2  efivars.qcow2  console.log
    ///     STATE/LAB/GUEST/disks/DISK-ID.qcow2     (boot-attached device disks)
    ///
    /// `qlab run` boots on its own set (`.testRun`): STATE/LAB/GUEST/run/disk.qcow2
    /// and efivars.qcow2, made fresh for every run, so a run never touches the
    /// overlay holding snapshots a user saved by hand.
    ///
    /// Directories are not created here.
    public static func standard(
        lab: Lab, guest: LabGuest, runtimeDirectory: String, stateDirectory: String, accel: AccelDecision,
        overlays: OverlaySet = .lab
    ) -> QEMURuntime {
        let run = runtimeDirectory + "/" + lab.name
        let state = stateDirectory + "/" + lab.name + "/" + guest.name
        let disks = overlays == .testRun ? state + "/run" : state
        var deviceOverlays: [String: String] = [:]
        for device in lab.devices where lab.effectiveAttach(of: device, for: guest) == .boot {
            for disk in device.emulated?.disks ?? [] where disk.usesOverlay {
                deviceOverlays[disk.id] = state + "/disks/" + disk.id + ".qcow2"
            }
        }
        var runtime = QEMURuntime(
            qmpSocket: run + "/qmp.sock", supervisorSocket: run + "/supervisor.sock",
            serialSocket: run + "/console.sock", serialLog: state + "/console.log", pidFile: run + "/qemu.pid",
            diskOverlay: guest.disk == nil ? nil : disks + "/disk.qcow2", deviceDiskOverlays: deviceOverlays,
            firmwareVars: guest.effectiveFirmware == .uefi ? disks + "/efivars.qcow2" : nil, accel: accel)
        if guest.agent { runtime.agentSocket = run + "/qga.sock" }
        return runtime
    }
}

/// Which guest disk overlay (and UEFI variable store) a launch uses.
public enum OverlaySet: String, Sendable, Hashable {
    /// The lab's own, kept across `up`s: snapshots saved by hand live in it.
    case lab
    /// `qlab run`'s, replaced at every run's boot.
    case testRun = "test_run"
}
