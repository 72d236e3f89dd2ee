import Platform

extension LabPlanner {
    /// The RAM root for this planner's runtime root (``LabDirectories/ramRoot(environment:uid:)``).
    public var ramRoot: String {
        var environment = self.environment
        if environment["QLAB_RAM_DIR"]?.isEmpty ?? true { environment["QLAB_RUNTIME_DIR"] = runtimeRoot }
        return LabDirectories.ramRoot(environment: environment, uid: ThisProcess.userID)
    }

    /// How reverts of `guest` put RAM back, and why (`revert:`, docs/devices-snapshots.md).
    /// `fast` needs: no passthrough device attached at boot (vfio blocks
    /// snapshots of a VM it is in; a hotplugged one is unplugged before every
    /// save and revert, and `auto` then picks ``passthroughAutoMethod``), a guest disk (the qcow2 overlay holds the
    /// snapshots' device state), no memory options of the lab's own in
    /// `qemu_args`, and a private RAM directory with room for the live RAM
    /// file and one snapshot image (2 x memory). Otherwise `loadvm`, saying why.
    public func revertDecision(lab: Lab, guest: LabGuest, memory: ByteSize) -> RevertRecord {
        let choice = lab.revertChoice(for: guest)
        let mebibytes = Int(memory.mebibytes)
        let directory = ramRoot + "/" + lab.name
        let asked = choice == .fast ? " (revert: fast was asked)" : ""
        func loadvm(_ why: String) -> RevertRecord {
            RevertRecord(method: .loadvm, reason: "loadvm\(asked): \(why)", memoryMiB: mebibytes)
        }
        if choice == .loadvm {
            return RevertRecord(method: .loadvm, reason: "loadvm: the lab asks for it (revert: loadvm)", memoryMiB: mebibytes)
        }
        let passthrough = lab.devices.filter(\.isPassthrough)
        if let device = passthrough.first(where: { $0.attach == .boot }) {
            return loadvm("device \(device.name) is passed through and attached at boot (vfio blocks snapshots while it is attached)")
        }
        if choice == .auto, let device = passthrough.first, Self.passthroughAutoMethod == .loadvm {
            return RevertRecord(method: .loadvm, reason: "loadvm (auto): device \(device.name) is passed through; " + Self.passthroughAutoWhy, memoryMiB: mebibytes)
        }
        guard guest.disk != nil else { return loadvm("guest \(guest.name) has no disk to hold snapshots") }
        let memoryOptions = ["-mem-path", "-mem-prealloc", "-numa", "memory-backend"]
        if let option = (lab.qemuArgs + guest.qemuArgs).first(where: { arg in memoryOptions.contains { arg.contains($0) } }) {
            return loadvm("qemu_args set guest memory themselves (\(option))")
        }
        do {
            _ = try PrivateDirectory.open(ramRoot, role: .ram, create: false)
        } catch {
            return loadvm("\(error)")
        }
        let needed = UInt64(mebibytes) * 2
        guard let free = RAMImage.freeBytes(at: directory) else { return loadvm("cannot tell the free space of \(directory)") }
        if free >> 20 < needed {
            return loadvm("\(directory) has \(free >> 20) MiB free, needs \(needed) (the live RAM file and one snapshot image); set QLAB_RAM_DIR")
        }
        var why = choice == .fast ? "revert: fast" : "auto"
        if let device = passthrough.first {
            why += "; device \(device.name) is passed through, plugged into each new QEMU" + (choice == .auto ? "; " + Self.passthroughAutoWhy : "")
        }
        return RevertRecord(method: .fast, reason: "fast (\(why)): guest RAM in \(directory)/\(RAMFiles.live)", ramDirectory: directory, memoryMiB: mebibytes)
    }

    /// What `revert: auto` picks for a lab with a hotplugged passthrough card,
    /// from the nested bench's measurement (scenario `revert-passthrough`,
    /// docs/devices-snapshots.md): vfio pins all guest RAM when the card is
    /// plugged, which a fresh QEMU on a copy-on-write map pays by copying every page.
    public static let passthroughAutoMethod: RevertMethod = .loadvm
    /// Why, for the plan's reason.
    static let passthroughAutoWhy = "measured in L1 with real vfio (nested scenario revert-passthrough), revert + plug took 1.6-2.8x as long fast as loadvm at 64 and 256 MiB: a new QEMU's start, and the plug's pin copying every page of the copy-on-write map (docs/devices-snapshots.md)"
}
