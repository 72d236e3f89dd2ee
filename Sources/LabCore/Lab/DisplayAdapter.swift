/// A guest's display adapter (lab key `display:`, top level or per guest).
/// qlab starts QEMU with `-nodefaults -display none`: no adapter unless the lab
/// or the OS profile asks for one. With one, `qlab screenshot` (QMP
/// `screendump`) and `qlab screen --text` (the VGA text buffer) see what the
/// firmware, option ROMs and the OS draw; QEMU still opens no window.
public enum DisplayAdapter: String, Sendable, CaseIterable {
    /// No display adapter: the serial console only.
    case none
    /// QEMU's standard VGA (`-device VGA`), with SeaBIOS's VGA BIOS: text mode at 0xB8000.
    case vga

    /// The adapter's QEMU id and where it sits: a root-bus slot no other device of qlab's takes.
    public static let id = "qlab-vga"
    public static let slot = PCISlotAddress(slot: 0x1e)
}

extension OSProfile {
    /// Graphical systems (macos, windows, dos) get a VGA adapter unless the lab says `display: none`.
    public var defaultDisplay: DisplayAdapter {
        switch os {
        case .macos, .windows, .dos: return .vga
        default: return .none
        }
    }
}

extension Lab {
    /// The guest's `display:`, else the lab's, else its OS profile's.
    public func display(for guest: LabGuest) -> DisplayAdapter {
        guest.display ?? display ?? guest.profile.defaultDisplay
    }
}
