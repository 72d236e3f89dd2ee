/// How ``LabSession/detach(_:policy:)`` gets a PCI device out of QEMU.
///
/// Measured on QEMU 7.2 (q35, cards behind qlab's pcie-pci-bridge): `device_del`
/// only asks; the unplug completes when the guest's OS ejects the card through
/// ACPI (the Linux test guest: DEVICE_DELETED 60-1200 ms later under TCG). In
/// a paused VM, or one with no OS, nothing happens until a `system_reset`,
/// which completes the pending unplug in the same main-loop turn (~3 ms).
/// A reset also reboots the guest, which is harmless when its state is about
/// to be replaced by a snapshot load.
public struct UnplugPolicy: Sendable, Hashable {
    /// How long the guest gets to complete the unplug.
    public var guestTimeout: Duration
    /// When the guest does not complete it in time, refuses it, or cannot
    /// (the VM is paused/prelaunch): complete it with `system_reset`.
    public var resetFallback: Bool
    /// Do not ask the guest at all: `device_del`, then `system_reset` at once.
    public var resetAtOnce: Bool

    public init(guestTimeout: Duration = .seconds(10), resetFallback: Bool = true, resetAtOnce: Bool = false) {
        self.guestTimeout = guestTimeout
        self.resetFallback = resetFallback
        self.resetAtOnce = resetAtOnce
    }

    /// Wait up to 10 s for the guest, then reset; reset at once when the VM is not running.
    public static let standard = UnplugPolicy()
    /// Only the guest may complete the unplug; never reset.
    public static func guestOnly(timeout: Duration = .seconds(10)) -> UnplugPolicy {
        UnplugPolicy(guestTimeout: timeout, resetFallback: false)
    }
    /// Reset at once: for when the guest's state is thrown away next (a snapshot load).
    public static let resetAtOnce = UnplugPolicy(guestTimeout: .zero, resetFallback: true, resetAtOnce: true)
}

/// How an unplug was completed.
public enum UnplugMethod: String, Sendable, Hashable, CustomStringConvertible {
    /// The guest ejected the device (DEVICE_DELETED).
    case guest
    /// The guest did not within the timeout; `system_reset` completed it (the guest rebooted).
    case resetAfterTimeout = "reset-after-timeout"
    /// The guest reported DEVICE_UNPLUG_GUEST_ERROR; `system_reset` completed it.
    case resetAfterGuestError = "reset-after-guest-error"
    /// The VM was not running (paused, prelaunch, ...): `system_reset` at once.
    case resetVMNotRunning = "reset-vm-not-running"
    /// The policy asked for a reset at once.
    case resetRequested = "reset-requested"
    /// QEMU had no such device any more (removed outside qlab, or by an earlier reset).
    case alreadyGone = "already-gone"
    /// A fast revert replaced QEMU: the device went with the old one.
    case droppedWithQEMU = "dropped-with-qemu"

    public var usedReset: Bool { rawValue.hasPrefix("reset") }

    public var description: String {
        switch self {
        case .guest: return "the guest released it (DEVICE_DELETED)"
        case .resetAfterTimeout: return "the guest did not release it in time; system_reset completed the unplug (the guest was reset)"
        case .resetAfterGuestError: return "the guest refused (DEVICE_UNPLUG_GUEST_ERROR); system_reset completed the unplug (the guest was reset)"
        case .resetVMNotRunning: return "the VM was not running, so no guest could release it; system_reset completed the unplug"
        case .resetRequested: return "system_reset completed the unplug at once, without waiting for the guest (the guest was reset)"
        case .alreadyGone: return "QEMU had already removed it"
        case .droppedWithQEMU: return "it went with the QEMU a fast revert replaced (no unplug needed)"
        }
    }
}
