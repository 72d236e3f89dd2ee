/// A guest operating system the lab can boot. Unset fields come from its
/// OS profile (``OSProfile``).
public struct LabGuest: Sendable, Hashable {
    /// `[a-z0-9][a-z0-9-]*`; names its state directory.
    public var name: String
    public var os: GuestOS
    /// Direct kernel boot (absolute paths).
    public var kernel: String?
    public var initrd: String?
    public var append: String?
    /// The base disk image, absolute; never written: QEMU runs on a qcow2 overlay of it.
    public var disk: String?
    /// The base image's format, `qcow2` or `raw`.
    public var diskFormat: String
    /// Disk interface, overriding the profile's.
    public var diskInterface: DiskInterface?
    /// A BIOS image passed as `-bios` (BIOS firmware only).
    public var bios: String?
    /// Firmware kind, overriding the profile's.
    public var firmware: FirmwareKind?
    /// UEFI code (read-only) and the variable-store template copied per lab.
    public var firmwareCode: String?
    public var firmwareVars: String?
    /// Serial console text that means the guest has booted.
    public var ready: String?
    /// The shell prompt on the serial console.
    public var prompt: String?
    public var login: GuestLogin?
    /// How long booting to `ready` may take.
    public var bootTimeout: Duration
    /// The shell command that makes the guest find hotplugged PCI/SCSI devices, overriding the profile's.
    public var rescan: String?
    public var network: NetworkMode
    /// A QEMU guest agent channel (virtio-serial port `org.qemu.guest_agent.0`);
    /// qlab then runs commands through qemu-ga when it answers.
    public var agent: Bool
    /// Machine settings for this guest only.
    public var machine: MachineSettings
    /// Passed to QEMU verbatim after the lab's own `qemu_args`.
    public var qemuArgs: [String]
    /// `revert:` of this guest; nil: the lab's.
    public var revert: RevertMethodChoice?
    public var location: SourceLocation
    /// `display:`, overriding the lab's (``Lab/display(for:)``).
    public var display: DisplayAdapter? = nil
    /// Text the screen shows once the firmware is done (SeaBIOS's "Booting from", a card BIOS's
    /// banner): boot waits for it before `ready`, within `boot_timeout`.
    public var firmwareReady: String? = nil
    /// `boot_keys:` keys pressed while the firmware runs, at every boot, before
    /// `firmware_ready` and `ready` are waited for (a card BIOS's Ctrl-A, a boot
    /// menu's choice), within `boot_timeout` (``GuestBootWait``).
    public var bootKeys: [KeyStep] = []

    public init(
        name: String, os: GuestOS, kernel: String? = nil, initrd: String? = nil, append: String? = nil,
        disk: String? = nil, diskFormat: String = "qcow2", diskInterface: DiskInterface? = nil, bios: String? = nil,
        firmware: FirmwareKind? = nil, firmwareCode: String? = nil, firmwareVars: String? = nil,
        ready: String? = nil, prompt: String? = nil, login: GuestLogin? = nil, bootTimeout: Duration = .seconds(300),
        rescan: String? = nil, network: NetworkMode = .none, machine: MachineSettings = MachineSettings(),
        qemuArgs: [String] = [], location: SourceLocation = SourceLocation(file: ""), agent: Bool = false
    ) {
        self.name = name
        self.os = os
        self.kernel = kernel
        self.initrd = initrd
        self.append = append
        self.disk = disk
        self.diskFormat = diskFormat
        self.diskInterface = diskInterface
        self.bios = bios
        self.firmware = firmware
        self.firmwareCode = firmwareCode
        self.firmwareVars = firmwareVars
        self.ready = ready
        self.prompt = prompt
        self.login = login
        self.bootTimeout = bootTimeout
        self.rescan = rescan
        self.network = network
        self.agent = agent
        self.machine = machine
        self.qemuArgs = qemuArgs
        self.location = location
    }

    public var profile: OSProfile { OSProfile.profile(for: os) }

    /// The firmware this guest boots with.
    public var effectiveFirmware: FirmwareKind { firmware ?? profile.firmware }
    public var effectiveDiskInterface: DiskInterface { diskInterface ?? profile.diskInterface }
    /// The rescan command the test loop runs after a hotplug; nil when the OS needs none or cannot.
    public var effectiveRescan: String? { rescan ?? profile.rescanCommand }
    public var effectivePrompt: String { prompt ?? profile.prompt }
}

/// Serial console login, for guests that do not start a root shell by themselves.
public struct GuestLogin: Sendable, Hashable {
    public var user: String
    public var password: String?
    /// The text that asks for the user name (default from the profile).
    public var loginPrompt: String?
    public var passwordPrompt: String?

    public init(user: String, password: String? = nil, loginPrompt: String? = nil, passwordPrompt: String? = nil) {
        self.user = user
        self.password = password
        self.loginPrompt = loginPrompt
        self.passwordPrompt = passwordPrompt
    }
}

/// Guest networking.
public enum NetworkMode: String, Sendable, CaseIterable {
    /// No NIC (tests talk over the serial console).
    case none
    /// A NIC of the profile's model on QEMU's user-mode network.
    case user
}
