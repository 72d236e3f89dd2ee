/// The doctor for a lab: its passthrough devices and its guest memory.
extension HostDoctor {
    /// The host devices a lab passes through. `ids:` means the first such device
    /// in address order (as the lab format defines it); when none is present the
    /// ids are kept so `device-present` fails naming them.
    public func selectors(for lab: Lab) -> [DeviceSelector] {
        lab.devices.compactMap(\.passthrough).map { passthrough in
            switch passthrough.host {
            case .address(let address):
                return .address(address)
            case .ids(let vendor, let device):
                if let first = sysfs.devices(vendor: vendor, device: device).first { return .address(first.address) }
                return .ids(vendor: vendor, device: device)
            }
        }
    }

    /// The guest memory to check memlock against: the guest's, or the largest of
    /// the lab's guests when no guest is named.
    public static func guestMemory(for lab: Lab, guest: LabGuest? = nil) -> UInt64? {
        if let guest { return lab.machineSettings(for: guest).memory.bytes }
        return lab.guests.map { lab.machineSettings(for: $0).memory.bytes }.max() ?? lab.machine.memory?.bytes
    }

    /// All checks for a lab's passthrough devices. A lab without passthrough
    /// devices gets the host checks only (and no memlock requirement).
    /// - Parameters:
    ///   - extraDevices: more devices to check along with the lab's.
    ///   - guestMemory: overrides the lab's guest memory for `memlock`.
    public func run(lab: Lab, guest: LabGuest? = nil, extraDevices: [DeviceSelector] = [], guestMemory: UInt64? = nil) -> DoctorReport {
        let selectors = selectors(for: lab)
        if selectors.isEmpty && extraDevices.isEmpty { return Self.notNeeded(lab: lab) }
        let memory = guestMemory ?? (selectors.isEmpty ? nil : Self.guestMemory(for: lab, guest: guest))
        var report = run(devices: selectors + extraDevices, guestMemory: memory)
        // The lab's own ROM options settle the rom check: rombar=0 hides the ROM, romfile= replaces it.
        let passthroughs = lab.devices.compactMap(\.passthrough)
        for (selector, passthrough) in zip(selectors, passthroughs) where passthrough.rombar == false || passthrough.romfile != nil {
            guard let index = report.devices.firstIndex(where: { $0.address == selector.description }),
                let check = report.devices[index].checks.firstIndex(where: { $0.id == "rom" }),
                report.devices[index].checks[check].status == .warn
            else { continue }
            let setting = passthrough.romfile.map { "romfile=\($0)" } ?? "rombar=0"
            report.devices[index].checks[check] = DoctorCheck("rom", .pass,
                report.devices[index].checks[check].detail + "; the lab sets \(setting), so QEMU does not read it")
        }
        return report
    }

    /// The report for a lab that passes no host device through: the host's vfio
    /// checks are not needed (skipped, saying why), so the doctor passes.
    static func notNeeded(lab: Lab) -> DoctorReport {
        let why = "not needed: lab \(lab.name) passes no host device through (vfio is not involved)"
        return DoctorReport(host: ["iommu-enabled", "vfio-module", "vfio-nodes", "memlock"].map { DoctorCheck($0, .skip, why) }, devices: [])
    }

    /// What `qlab up` calls before launching: refuse the launch when `ok` is false
    /// (unless forced) and show `text(onlyProblems: true)`. Labs without passthrough
    /// devices always pass (vfio is not involved).
    public static func preflight(lab: Lab, guest: LabGuest? = nil, roots: HostRoots = .live) -> DoctorReport {
        let doctor = HostDoctor(roots: roots)
        guard lab.devices.contains(where: \.isPassthrough) else { return DoctorReport(host: [], devices: []) }
        return doctor.run(lab: lab, guest: guest)
    }
}
