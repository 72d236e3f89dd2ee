import QMP

/// The persistent host setup for vfio passthrough, as files and commands a user
/// would otherwise copy from forum posts: the kernel command line, modprobe.d,
/// modules-load.d, and how to apply them. Nothing is written; it is printed.
public struct SetupPlan: Sendable, Hashable {
    public struct File: Sendable, Hashable {
        public var path: String
        public var contents: String
    }

    /// Kernel command line options to add (those already present are left out).
    public var kernelOptions: [String]
    /// Options already on the running kernel's command line.
    public var presentOptions: [String]
    public var files: [File]
    public var commands: [String]
    public var notes: [String]

    /// Native drivers of cards qlab knows, for the `softdep` that lets vfio-pci claim them first.
    public static let nativeDrivers: [String: String] = [
        "9004": "aic7xxx", "1000:0012": "sym53c8xx", "1000:0001": "sym53c8xx", "1022:2020": "am53c974",
    ]

    /// Builds the plan for the devices: their ids go to `vfio-pci ids=`, their
    /// current (or known) native drivers get a softdep.
    public init(roots: HostRoots, devices: [PCIDevice]) {
        let procfs = Procfs(roots: roots)
        let cmdline = procfs.kernelCommandLine() ?? []
        let vendorOption = procfs.cpuVendor() == "AuthenticAMD" ? "amd_iommu=on" : "intel_iommu=on"
        let wanted = [vendorOption, "iommu=pt"]
        kernelOptions = wanted.filter { !cmdline.contains($0) }
        presentOptions = wanted.filter { cmdline.contains($0) }

        let sysfs = Sysfs(roots: roots)
        let cards = devices.filter { !$0.isBridge }
        var ids: [String] = []
        var drivers: [String] = []
        var builtIn: [String] = []
        for card in cards {
            if !ids.contains(card.ids) { ids.append(card.ids) }
            // softdep names modules: the bound driver's module (ehci-pci lives in ehci_pci),
            // else the module qlab knows for the card.
            var native: String?
            if let driver = card.driver, !["vfio-pci", "pci-stub"].contains(driver) {
                native = sysfs.driverModule(driver)
                if native == nil && !builtIn.contains(driver) { builtIn.append(driver) }
            } else {
                native = Self.nativeDrivers[card.ids] ?? Self.nativeDrivers[PCIDeviceIDs.hex4(card.vendorID)]
            }
            if let native, !drivers.contains(native) { drivers.append(native) }
        }

        var modprobe = "# qlab: give these cards to vfio-pci at boot\n"
        if ids.isEmpty {
            modprobe += "# options vfio-pci ids=vvvv:dddd   (run 'qlab doctor --setup-plan --device BDF' to fill in the ids)\n"
        } else {
            modprobe += "options vfio-pci ids=\(ids.joined(separator: ","))\n"
        }
        for driver in drivers { modprobe += "softdep \(driver) pre: vfio-pci\n" }
        files = [
            File(path: "/etc/modprobe.d/vfio.conf", contents: modprobe),
            File(path: "/etc/modules-load.d/vfio.conf", contents: "vfio\nvfio_iommu_type1\nvfio_pci\n"),
        ]

        var commands: [String] = []
        if !kernelOptions.isEmpty {
            commands.append("sed -i 's/^GRUB_CMDLINE_LINUX_DEFAULT=\"/&\(kernelOptions.joined(separator: " ")) /' /etc/default/grub")
            commands.append("update-grub                      # Fedora/RHEL: grub2-mkconfig -o /boot/grub2/grub.cfg")
        }
        commands.append("update-initramfs -u              # Fedora/RHEL: dracut -f")
        commands.append("reboot")
        self.commands = commands

        var notes = ["enable VT-d (Intel) or AMD-Vi/IOMMU in the firmware setup"]
        if cards.contains(where: { KnownPCIDevices.masksINTx(vendor: $0.vendorID, device: $0.deviceID)?.masksINTx == false }) {
            notes.append("a card here cannot mask INTx: give it an IRQ line no other driver uses (qlab doctor shows intx-shared)")
        }
        for driver in builtIn {
            notes.append("\(driver) is built into the kernel (no module to softdep): vfio-pci ids= must claim the card first, or add vfio-pci.ids=\(ids.joined(separator: ",")) to the kernel command line")
        }
        self.notes = notes
    }

    public var text: String {
        var out = "# kernel command line\n"
        out += kernelOptions.isEmpty ? "# already has: \(presentOptions.joined(separator: " "))\n"
            : "add to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub: \(kernelOptions.joined(separator: " "))\n"
        for file in files { out += "\n# \(file.path)\n" + file.contents }
        out += "\n# apply\n" + commands.joined(separator: "\n") + "\n"
        out += "\n# also\n" + notes.map { "- " + $0 }.joined(separator: "\n") + "\n"
        return out
    }

    public var json: JSONValue {
        [
            "kernel_options": .array(kernelOptions.map(JSONValue.string)),
            "present_options": .array(presentOptions.map(JSONValue.string)),
            "files": .array(files.map { ["path": .string($0.path), "contents": .string($0.contents)] }),
            "commands": .array(commands.map(JSONValue.string)),
            "notes": .array(notes.map(JSONValue.string)),
        ]
    }
}
