import Platform

/// A lab whose loop would hotplug a `dc390` into the same QEMU twice, on a
/// QEMU that aborts then (``SecondDC390Plug``), is refused when planned.
extension LabPlanner {
    /// Throws for the first `dc390` that `guest`'s runs would plug again into
    /// the QEMU it was unplugged from: `strategy: reset` (unplug, reset, plug)
    /// and `strategy: snapshot` with the `loadvm` method (unplug, load in
    /// place, plug). A `fast` revert starts a fresh QEMU each time, so the card
    /// is plugged once per QEMU and works; so does `attach: boot`.
    static func refuseSecondDC390Plug(
        lab: Lab, guest: LabGuest, revert: RevertRecord, capabilities: QEMUCapabilities
    ) throws(LabFileError) {
        guard case .aborts(let version) = capabilities.secondDC390Plug else { return }
        let strategy = lab.effectiveStrategy(for: guest)
        let replugsInPlace: String
        switch strategy {
        case .reset: replugsInPlace = "strategy: reset unplugs it and plugs it again into the same QEMU for every run"
        case .snapshot:
            guard revert.method == .loadvm else { return }
            replugsInPlace = "the revert method is loadvm (\(revert.reason)), which unplugs it and plugs it again into the same QEMU for every run"
        }
        for device in lab.devices where device.emulated?.driver == "dc390" && lab.effectiveAttach(of: device, for: guest) == .hotplug {
            let fast = strategy == .snapshot ? "revert: fast (a fresh QEMU for every revert; needs the checks `auto` makes to pass), " : ""
            throw device.location.error(
                "device '\(device.name)' (driver dc390, attach: hotplug) cannot run in guest \(guest.name)'s loop on this QEMU: "
                    + "QEMU \(version) (\(lab.qemu)) aborts the second time a dc390 is hotplugged into the same QEMU process "
                    + "(the card's EEPROM stays registered for migration after the unplug: \"Assertion `!se->compat || se->instance_id == 0' failed\"; "
                    + "QEMU 7.2 and 10.0 both do), and \(replugsInPlace). "
                    + "Use \(fast)attach: boot, or driver am53c974 (the same chip without the EEPROM).")
        }
    }
}

extension LabPlanner {
    /// What ``plan(lab:guest:options:)`` refuses about `guest`'s test loop,
    /// checked for every guest before a `qlab run` boots any (so the run
    /// exits 2 with the reason instead of reporting a boot error per guest).
    public func checkLoop(lab: Lab, guest: LabGuest) throws(LabFileError) {
        let cacheDirectory = (try? PrivateDirectory.open(stateRoot, role: .state, create: false)) ?? nil
        let capabilities = QEMUCapabilities.probe(for: lab, environment: environment, cache: cacheDirectory)
        let revert = revertDecision(lab: lab, guest: guest, memory: lab.machineSettings(for: guest).memory)
        try Self.refuseSecondDC390Plug(lab: lab, guest: guest, revert: revert, capabilities: capabilities)
    }
}
