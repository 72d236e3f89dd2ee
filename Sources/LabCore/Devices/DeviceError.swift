
/// Why attaching or detaching a lab device failed. Each says what to do.
public enum DeviceError: Error, Sendable, CustomStringConvertible {
    /// The lab has no device of that name.
    case unknownDevice(device: String, lab: String, available: [String])
    /// The device is attached already (`state`: boot or hotplug).
    case alreadyAttached(device: String, state: String, lab: String)
    case notAttached(device: String, lab: String)
    /// QEMU refused a step: its own words and qlab's diagnosis of them.
    case qemuRefused(device: String, command: String, message: String, diagnoses: [Diagnosis])
    /// The guest did not complete the unplug in time and no reset was allowed.
    case unplugTimedOut(device: String, waited: Duration, lab: String)
    /// The VM is not running, so the guest cannot complete the unplug, and no reset was allowed.
    case guestCannotUnplug(device: String, vmStatus: String, lab: String)
    /// The guest reported DEVICE_UNPLUG_GUEST_ERROR and no reset was allowed.
    case guestRefusedUnplug(device: String)
    /// DEVICE_DELETED came but `query-pci` still lists the device.
    case stillPresent(device: String, lab: String)
    /// The overlay for one of the device's disks could not be made.
    case overlay(device: String, message: String)

    public var description: String {
        switch self {
        case .unknownDevice(let device, let lab, let available):
            var text = "lab \(lab) has no device '\(device)'"
            if let close = Suggestion.closest(to: device, in: available) { text += " (did you mean '\(close)'?)" }
            text += available.isEmpty ? "; it has no devices" : "; its devices: \(available.joined(separator: ", "))"
            return text
        case .alreadyAttached(let device, let state, let lab):
            return "device \(device) is already attached (\(state)); `qlab unplug \(lab) \(device)` first"
        case .notAttached(let device, let lab):
            return "device \(device) is not attached; `qlab hotplug \(lab) \(device)` attaches it"
        case .qemuRefused(let device, let command, let message, let diagnoses):
            var text = "device \(device): QEMU refused \(command): \(message)"
            for diagnosis in diagnoses { text += "\n\n" + diagnosis.text }
            return text
        case .unplugTimedOut(let device, let waited, let lab):
            return "device \(device): the guest did not complete the unplug within \(formatMilliseconds(waited)) "
                + "(PCI unplug needs the guest's ACPI/SHPC eject; is its OS up and does it handle hotplug?). "
                + "The unplug is still pending in QEMU; a reset completes it: `qlab reset \(lab)`, or unplug again without --no-reset-fallback"
        case .guestCannotUnplug(let device, let status, let lab):
            return "device \(device): the VM is \(status), so no guest can complete the unplug; resume it (`qlab qmp \(lab) cont`) "
                + "or allow the reset fallback (a system_reset completes the unplug; `qlab snapshot save --reset-fallback`)"
        case .guestRefusedUnplug(let device):
            return "device \(device): the guest refused the unplug (DEVICE_UNPLUG_GUEST_ERROR; the device may be in use in the guest); "
                + "release it in the guest, or allow the reset fallback"
        case .stillPresent(let device, let lab):
            return "device \(device): QEMU reported it deleted but query-pci still lists it; check `qlab qmp \(lab) query-pci`"
        case .overlay(let device, let message):
            return "device \(device): cannot make a fresh disk overlay: \(message)"
        }
    }

    /// The diagnoses of QEMU's text, when QEMU refused.
    public var diagnoses: [Diagnosis] {
        if case .qemuRefused(_, _, _, let diagnoses) = self { return diagnoses }
        return []
    }

    /// QEMU refused to add the device (`blockdev-add` of a disk, `device_add`),
    /// or its disk overlay could not be made: the attach removed what it had
    /// added, so the device is as it was before (unplugged) and QEMU runs on.
    public var isPlugFailure: Bool {
        switch self {
        case .qemuRefused(_, let command, _, _): return command == "blockdev-add" || command.hasPrefix("device_add")
        case .overlay: return true
        default: return false
        }
    }
}

extension DeviceError: ExitStatusCarrying {
    /// 2 for a device the lab does not have (what was typed), 1 otherwise.
    public var exitStatus: ExitStatus {
        if case .unknownDevice = self { return .usage }
        return .failed
    }
}
