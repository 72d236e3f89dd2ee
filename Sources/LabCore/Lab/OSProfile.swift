/// The guest operating systems qlab has profiles for.
public enum GuestOS: String, Sendable, CaseIterable {
    case linux, freebsd, netbsd, openbsd, macos, dos, windows
    /// GRUB's shell on the serial port, booted by SeaBIOS: the firmware level at
    /// which DOS and every BIOS-booted OS first meet a SCSI card (images/build.sh grub).
    case grub
}

/// BIOS (SeaBIOS, QEMU's default) or UEFI (OVMF).
public enum FirmwareKind: String, Sendable, CaseIterable {
    case bios, uefi
}

/// How the guest's disk is attached.
public enum DiskInterface: String, Sendable, CaseIterable {
    /// virtio-blk-pci: fastest; needs a virtio driver in the guest.
    case virtio
    /// SATA through an AHCI controller (q35's built-in ICH9 AHCI).
    case ahci
    /// Parallel IDE (pc's built-in PIIX IDE; on q35 the AHCI ports in IDE terms).
    case ide
}

/// The defaults a user would otherwise look up for a guest OS: machine type,
/// firmware, disk and NIC models, and whether and how the OS finds a PCI
/// device hotplugged while it runs. The reasons are in docs/lab-format.md.
public struct OSProfile: Sendable, Hashable {
    public var os: GuestOS
    public var machineType: String
    public var firmware: FirmwareKind
    /// The CPU model; nil means `host` under KVM and `max` under TCG.
    public var cpu: String?
    public var memory: ByteSize
    public var diskInterface: DiskInterface
    /// The `-device` model of the NIC (when the guest has `network: user`).
    public var nicModel: String
    /// Whether the OS takes a PCI device hotplugged at run time. When false, the
    /// lab's hotplug devices are attached at boot and runs use `reset`.
    public var hotplug: Bool
    /// The guest shell command that finds a hotplugged card and its SCSI disks; nil when none is needed.
    public var rescanCommand: String?
    /// Kernel command line for direct kernel boot when the guest gives none.
    public var defaultAppend: String?
    /// The shell prompt on the serial console.
    public var prompt: String
    /// Serial console login prompts (used when the guest has `login:`).
    public var loginPrompt: String
    public var passwordPrompt: String
    /// Why the profile is as it is, in a sentence or two.
    public var notes: String
    /// How to put the OS's console on the first serial port (boot loader,
    /// kernel, a shell on it), in one line: `qlab guest check` prints it when
    /// the serial console stays silent. docs/guests.md says the same ("console:").
    public var consoleRecipe: String
    /// A guest shell command that prints one line per SCSI disk the OS sees
    /// (the disks of the lab's cards among them); nil when the OS has none.
    /// docs/guests.md says the same ("scsi disks:").
    public var listSCSIDisksCommand: String?
    /// The console's command language (how qlab frames a command there).
    public var shell: ConsoleShell = .posix
    /// Whether the guest gets QEMU's ISA pvpanic device: an OS with its driver
    /// (Linux's pvpanic-mmio, in the project's guest image) tells QEMU of a kernel
    /// panic, and a run reports it at once (GUEST_PANICKED) instead of a timeout.
    public var panicDevice: Bool { os == .linux }

    /// The OVMF images Debian's `ovmf` package installs (2 MiB flash layout).
    public static let ovmfCode = "/usr/share/OVMF/OVMF_CODE.fd"
    public static let ovmfVars = "/usr/share/OVMF/OVMF_VARS.fd"

    public static func profile(for os: GuestOS) -> OSProfile {
        switch os {
        case .linux:
            return OSProfile(
                os: .linux, machineType: "q35", firmware: .bios, cpu: nil, memory: .mebibytes(512),
                diskInterface: .virtio, nicModel: "virtio-net-pci", hotplug: true,
                rescanCommand:
                    "echo 1 > /sys/bus/pci/rescan; for h in /sys/class/scsi_host/host*/scan; do [ -e \"$h\" ] && echo '- - -' > \"$h\"; done; true",
                defaultAppend: "console=ttyS0", prompt: "# ", loginPrompt: "login: ", passwordPrompt: "Password: ",
                notes: "Linux takes ACPI and SHPC hotplug; a PCI rescan plus a SCSI host scan makes the disks appear without waiting for udev.",
                consoleRecipe: "console=ttyS0,115200 on the kernel command line (GRUB: GRUB_CMDLINE_LINUX and GRUB_TERMINAL=serial); a root shell on ttyS0: systemd serial-getty@ttyS0 with agetty --autologin root",
                listSCSIDisksCommand: "for d in /sys/class/scsi_disk/*; do [ -e \"$d\" ] && echo \"${d##*/}\" $(cat \"$d/device/vendor\" \"$d/device/model\"); done; true")
        case .freebsd:
            return OSProfile(
                os: .freebsd, machineType: "q35", firmware: .bios, cpu: nil, memory: .mebibytes(1024),
                diskInterface: .ahci, nicModel: "e1000", hotplug: true,
                rescanCommand:
                    "for b in $(sysctl -N dev.pci | cut -d. -f3 | sort -u); do devctl rescan pci$b; done; camcontrol rescan all",
                defaultAppend: nil, prompt: "# ", loginPrompt: "login: ", passwordPrompt: "Password:",
                notes: "FreeBSD handles no ACPI/SHPC hotplug notification for conventional PCI, but `devctl rescan` probes new functions on each pci bus; CAM then needs a rescan.",
                consoleRecipe: "boot_serial=\"YES\" and console=\"comconsole\" in /boot/loader.conf; in /etc/ttys ttyu0 on, with an autologin getty (gettytab al=root)",
                listSCSIDisksCommand: "camcontrol devlist | grep -E '[(,]da[0-9]+'; true")
        case .netbsd:
            return OSProfile(
                os: .netbsd, machineType: "q35", firmware: .bios, cpu: nil, memory: .mebibytes(1024),
                diskInterface: .ahci, nicModel: "e1000", hotplug: false, rescanCommand: nil,
                defaultAppend: nil, prompt: "# ", loginPrompt: "login: ", passwordPrompt: "Password:",
                notes: "NetBSD has no PCI hotplug: the card is attached at boot and runs reset the guest instead of reverting a snapshot.",
                consoleRecipe: "consdev=com0 in /boot.cfg (or installboot -o console=com0); the kernel follows the boot loader; /etc/ttys console on (log in with the lab's login:)",
                listSCSIDisksCommand: "sysctl -n hw.disknames | tr ' ' '\\n' | grep '^sd'; true")
        case .openbsd:
            return OSProfile(
                os: .openbsd, machineType: "q35", firmware: .bios, cpu: nil, memory: .mebibytes(1024),
                diskInterface: .ahci, nicModel: "e1000", hotplug: false, rescanCommand: nil,
                defaultAppend: nil, prompt: "# ", loginPrompt: "login: ", passwordPrompt: "Password:",
                notes: "OpenBSD has no PCI hotplug: the card is attached at boot and runs reset the guest.",
                consoleRecipe: "stty com0 115200 and set tty com0 in /etc/boot.conf; in /etc/ttys tty00 \"/usr/libexec/getty std.115200\" vt220 on secure",
                listSCSIDisksCommand: "dmesg | awk '/^OpenBSD [0-9]/ { n = 0 } /^sd[0-9]+ at scsibus/ && !/<ATA,/ { line[n++] = $0 } END { for (i = 0; i < n; i++) print line[i] }'")
        case .macos:
            return OSProfile(
                os: .macos, machineType: "q35", firmware: .uefi,
                cpu: "Penryn,vendor=GenuineIntel,+ssse3,+sse4.1,+sse4.2,+popcnt,+xsave,+xsaveopt",
                memory: .mebibytes(2048), diskInterface: .ahci, nicModel: "e1000-82545em", hotplug: false,
                rescanCommand: nil, defaultAppend: nil, prompt: "# ", loginPrompt: "login: ", passwordPrompt: "Password:",
                notes: "Mac OS X boots through OpenCore on OVMF with a Penryn-class CPU and needs isa-applesmc; it takes no ACPI PCI hotplug on q35, so the card is attached at boot.",
                consoleRecipe: "OpenCore config.plist Misc > Serial > Init true and boot-args serial=3 (kernel console on the serial port); a root shell on it through a launchd job running getty on /dev/tty.serial1 (unverified here)",
                listSCSIDisksCommand: "ioreg -r -c IOSCSIPeripheralDeviceType00 -d 1 | grep -- '+-o'; true")
        case .dos:
            return OSProfile(
                os: .dos, machineType: "pc", firmware: .bios, cpu: "pentium3", memory: .mebibytes(64),
                diskInterface: .ide, nicModel: "ne2k_pci", hotplug: false, rescanCommand: nil,
                defaultAppend: nil, prompt: "C:\\>", loginPrompt: "", passwordPrompt: "",
                notes: "DOS talks to the card through its option ROM and ASPI drivers: i440FX, IDE, SeaBIOS, card at boot.",
                consoleRecipe: "MODE COM1:9600,N,8,1 and CTTY COM1 at the end of AUTOEXEC.BAT (the ready text echoed after CTTY)",
                listSCSIDisksCommand: nil)
        case .windows:
            return OSProfile(
                os: .windows, machineType: "q35", firmware: .uefi, cpu: nil, memory: .mebibytes(4096),
                diskInterface: .ahci, nicModel: "e1000e", hotplug: true,
                rescanCommand: "pnputil /scan-devices",
                defaultAppend: nil, prompt: "> ", loginPrompt: "", passwordPrompt: "",
                notes: "Windows 10/11 take ACPI PCI hotplug; `pnputil /scan-devices` (2004 and later) forces the enumeration.",
                consoleRecipe: "bcdedit /ems on and bcdedit /emssettings EMSPORT:1 EMSBAUDRATE:115200 (Special Administration Console on COM1)",
                listSCSIDisksCommand: nil)
        case .grub:
            return OSProfile(
                os: .grub, machineType: "q35", firmware: .bios, cpu: nil, memory: .mebibytes(128),
                diskInterface: .ide, nicModel: "e1000", hotplug: false, rescanCommand: nil,
                defaultAppend: nil, prompt: "grub> ", loginPrompt: "", passwordPrompt: "",
                notes: "GRUB reads disks through the BIOS: SeaBIOS drives lsi, esp (am53c974/dc390), mpt, megasas and pvscsi controllers itself and enumerates them at boot, so the card is attached at boot and runs reset the guest.",
                consoleRecipe: "serial --unit=0 --speed=115200, terminal_input serial, terminal_output serial in GRUB's embedded or grub.cfg configuration (images/grub/embedded.cfg)",
                listSCSIDisksCommand: "ls",
                shell: .grub)
        }
    }
}
