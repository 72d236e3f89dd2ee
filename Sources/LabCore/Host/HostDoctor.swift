import Platform

/// Predicts vfio passthrough failures from the host's own files before QEMU starts.
///
/// Host checks: `iommu-enabled`, `vfio-module`, `vfio-nodes`, `memlock`.
/// Per device: `device-present`, `iommu-group`, `group-viable`, `driver-bound`,
/// `vfio-nodes`, `intx-pin`, `irq-assigned`, `intx-masking`, `intx-shared`,
/// `reset`, `rom`. See docs/doctor.md.
public struct HostDoctor {
    /// When the doctor may run the live INTx masking probe (the kernel's own
    /// test, a write to the card's config space).
    public enum ProbePolicy: Sendable, Hashable {
        /// Only on the live /sys (never a tree given with --sysfs), only as root,
        /// only for an idle card that is unbound or bound to vfio-pci or pci-stub.
        case automatic
        /// Never write anything.
        case never
    }

    public var roots: HostRoots
    public var probePolicy: ProbePolicy
    /// Makes the probe's writes; tests pass one that plays the kernel.
    public var writer: SysfsWriter
    /// The effective user id (`geteuid(2)` by default); tests set it.
    public var effectiveUserID: UInt32

    public var sysfs: Sysfs { Sysfs(roots: roots) }
    public var procfs: Procfs { Procfs(roots: roots) }

    public init(roots: HostRoots = .live, probePolicy: ProbePolicy = .automatic, writer: SysfsWriter = SysfsWriter()) {
        self.roots = roots
        self.probePolicy = probePolicy
        self.writer = writer
        self.effectiveUserID = ThisProcess.effectiveUserID
    }

    /// All checks for the host and the selected devices.
    /// - Parameter guestMemory: the guest's RAM in bytes, for `memlock`; `nil` skips it.
    public func run(devices selectors: [DeviceSelector], guestMemory: UInt64?) -> DoctorReport {
        let context = Context(doctor: self)
        var reports: [DoctorReport.Device] = []
        var seen = Set<PCIAddress>()
        for selector in selectors {
            let matched = selector.resolve(in: sysfs)
            if matched.isEmpty {
                reports.append(DoctorReport.Device(address: selector.description, checks: missingDeviceChecks(selector)))
            }
            for device in matched where seen.insert(device.address).inserted {
                reports.append(DoctorReport.Device(address: device.address.description, checks: deviceChecks(device, context)))
            }
        }
        return DoctorReport(host: hostChecks(guestMemory: guestMemory), devices: reports)
    }

    /// The checks `qlab up` runs before launching a lab with passthrough devices;
    /// the caller refuses the launch when the report is not `ok` (unless forced).
    public static func preflight(devices: [DeviceSelector], guestMemory: UInt64?, roots: HostRoots = .live) -> DoctorReport {
        HostDoctor(roots: roots).run(devices: devices, guestMemory: guestMemory)
    }

    // MARK: - Host checks

    public func hostChecks(guestMemory: UInt64?) -> [DoctorCheck] {
        [iommuEnabled(), vfioModule(), vfioContainerNode(), memlock(guestMemory: guestMemory)]
    }

    func iommuEnabled() -> DoctorCheck {
        let groups = sysfs.iommuGroups()
        let units = sysfs.iommuUnits()
        let cmdline = procfs.kernelCommandLine() ?? []
        let iommuWords = cmdline.filter { $0.hasPrefix("intel_iommu=") || $0.hasPrefix("amd_iommu=") || $0.hasPrefix("iommu=") }
        let detail = "\(groups.count) IOMMU group(s) in \(roots.sys("kernel/iommu_groups")); IOMMU units in class/iommu: "
            + (units.isEmpty ? "none" : units.joined(separator: ", "))
            + "; kernel command line: " + (iommuWords.isEmpty ? "no IOMMU options" : iommuWords.joined(separator: " "))
        if !groups.isEmpty { return DoctorCheck("iommu-enabled", .pass, detail) }
        let switchedOff = iommuWords.filter { $0.hasSuffix("=off") || $0 == "iommu=off" }
        var hint = "enable VT-d/AMD-Vi in the firmware setup and add \(kernelIOMMUOption()) iommu=pt to the kernel command line (qlab doctor --setup-plan), then reboot"
        if !switchedOff.isEmpty { hint = "the kernel command line switches the IOMMU off (\(switchedOff.joined(separator: " "))): " + hint }
        return DoctorCheck("iommu-enabled", .fail, detail, hint: hint)
    }

    /// `intel_iommu=on` or `amd_iommu=on` from the CPU vendor in cpuinfo.
    func kernelIOMMUOption() -> String {
        procfs.cpuVendor() == "AuthenticAMD" ? "amd_iommu=on" : "intel_iommu=on"
    }

    func vfioModule() -> DoctorCheck {
        let driver = sysfs.hasPCIDriver("vfio-pci")
        let module = sysfs.hasModule("vfio_pci")
        let type1 = sysfs.hasModule("vfio_iommu_type1")
        let nointxmask = sysfs.moduleParameter("vfio_pci", "nointxmask")
        var detail = "vfio-pci driver: " + (driver ? "registered" : module ? "module loaded, no driver in bus/pci/drivers" : "not loaded")
        detail += "; vfio_iommu_type1: " + (type1 ? "loaded" : "not loaded")
        if let nointxmask { detail += "; vfio_pci nointxmask=\(nointxmask)" }
        if !driver && !module {
            return DoctorCheck("vfio-module", .fail, detail, hint: "modprobe vfio-pci (and list it in /etc/modules-load.d/vfio.conf: qlab doctor --setup-plan)")
        }
        if !type1 {
            return DoctorCheck("vfio-module", .warn, detail, hint: "modprobe vfio_iommu_type1; without it QEMU reports 'No available IOMMU models'")
        }
        if sysfs.vfioNoINTxMask() == true {
            return DoctorCheck("vfio-module", .warn, detail,
                hint: "nointxmask=Y makes every card need an IRQ line of its own; remove 'options vfio-pci nointxmask=1' unless a card's masking is broken")
        }
        return DoctorCheck("vfio-module", .pass, detail)
    }

    func vfioContainerNode() -> DoctorCheck {
        let path = roots.dev("vfio/vfio")
        guard FileSystem.entryExists(path) else {
            return DoctorCheck("vfio-nodes", .fail, "\(path) does not exist", hint: "modprobe vfio (it creates /dev/vfio/vfio)")
        }
        guard HostFiles.canReadWrite(path) else {
            return DoctorCheck("vfio-nodes", .fail, "\(path) exists but this user cannot open it read-write (access(2))",
                hint: "run as root or give this user access (a udev rule: SUBSYSTEM==\"vfio\", GROUP=\"kvm\", MODE=\"0660\")")
        }
        return DoctorCheck("vfio-nodes", .pass, "\(path) is readable and writable by this user")
    }

    /// Extra locked memory QEMU pins beyond guest RAM (ROMs, firmware, video memory).
    public static let memlockOverhead: UInt64 = 64 << 20

    func memlock(guestMemory: UInt64?) -> DoctorCheck {
        let limit = procfs.memlockLimit()
        let limitText = limit.bytes.map { "\(ByteSize(bytes: $0).humanReadable) (\($0) bytes)" } ?? "unlimited"
        let ipcLock = procfs.hasIPCLock()
        var detail = "memlock limit \(limitText) from \(limit.source)" + (ipcLock ? "; CAP_IPC_LOCK held" : "")
        guard let guestMemory else {
            return DoctorCheck("memlock", .skip, detail + "; no guest memory size given")
        }
        detail += "; guest memory \(ByteSize(bytes: guestMemory).humanReadable)"
        let hint = "vfio pins all guest RAM: raise the limit above \(ByteSize(bytes: guestMemory + Self.memlockOverhead).humanReadable) (ulimit -l, or a line such as '<user> - memlock unlimited' in /etc/security/limits.d/qlab.conf), or run as root"
        if ipcLock || limit.bytes == nil { return DoctorCheck("memlock", .pass, detail) }
        let bytes = limit.bytes ?? 0
        if bytes < guestMemory { return DoctorCheck("memlock", .fail, detail, hint: hint) }
        if bytes < guestMemory + Self.memlockOverhead { return DoctorCheck("memlock", .warn, detail + "; little room for ROMs and firmware", hint: hint) }
        return DoctorCheck("memlock", .pass, detail)
    }

    // MARK: - Device checks

    /// What every device check needs from the host, read once.
    struct Context {
        var devices: [PCIDevice]
        var interrupts: InterruptTable?
        var noINTxMask: Bool?

        init(doctor: HostDoctor) {
            devices = doctor.sysfs.devices()
            interrupts = doctor.procfs.interrupts()
            noINTxMask = doctor.sysfs.vfioNoINTxMask()
        }

        func device(_ address: PCIAddress) -> PCIDevice? { devices.first { $0.address == address } }
    }

    func missingDeviceChecks(_ selector: DeviceSelector) -> [DoctorCheck] {
        let listed = sysfs.deviceAddresses().count
        return [
            DoctorCheck("device-present", .fail, "no PCI device matches \(selector) in \(roots.sys("bus/pci/devices")) (\(listed) devices listed)",
                hint: "check the address or ids with 'qlab devices'; is the card seated, and the slot powered?")
        ]
    }

    /// The per-device checks for one device.
    public func deviceChecks(_ device: PCIDevice) -> [DoctorCheck] {
        deviceChecks(device, Context(doctor: self))
    }

    func deviceChecks(_ device: PCIDevice, _ context: Context) -> [DoctorCheck] {
        let name = KnownPCIDevices.lookup(vendor: device.vendorID, device: device.deviceID)?.name
        var checks = [
            DoctorCheck("device-present", .pass,
                "\(device.address) \(device.ids)\(name.map { " " + $0 } ?? "") rev \(PCIDeviceIDs.hex4(device.revision).suffix(2)), class \(KnownPCIDevices.className(device.classCode)), at \(device.devicePath)")
        ]
        checks.append(iommuGroup(device))
        checks.append(groupViable(device, context))
        checks.append(driverBound(device))
        checks.append(groupNode(device))
        checks.append(intxPin(device))
        checks.append(irqAssigned(device))
        let masking = intxMasking(device, context)
        checks.append(intxMaskingCheck(device, masking))
        checks.append(intxShared(device, masking, context))
        checks.append(reset(device, context))
        checks.append(rom(device))
        return checks
    }

    func iommuGroup(_ device: PCIDevice) -> DoctorCheck {
        guard let group = device.iommuGroup else {
            return DoctorCheck("iommu-group", .fail, "\(device.address) has no iommu_group link; QEMU would print 'no iommu_group found'",
                hint: "enable the IOMMU (see iommu-enabled): VT-d/AMD-Vi in firmware, \(kernelIOMMUOption()) iommu=pt")
        }
        let members = sysfs.groupMembers(group)
        return DoctorCheck("iommu-group", .pass, "IOMMU group \(group): " + members.map(\.description).joined(separator: ", "))
    }

    /// Drivers a group member may have without making the group unusable for vfio.
    static let viableDrivers: Set<String> = ["vfio-pci", "pci-stub", "pcieport"]

    func groupViable(_ device: PCIDevice, _ context: Context) -> DoctorCheck {
        guard let group = device.iommuGroup else { return DoctorCheck("group-viable", .skip, "no IOMMU group") }
        var offenders: [String] = []
        var fine: [String] = []
        for member in sysfs.groupMembers(group) where member != device.address {
            guard let other = context.device(member) ?? sysfs.device(member) else { continue }
            if let driver = other.driver, !Self.viableDrivers.contains(driver), !other.isBridge {
                offenders.append("\(member) (\(driver))")
            } else {
                fine.append("\(member) (\(other.isBridge ? "bridge" : other.driver ?? "no driver"))")
            }
        }
        let others = fine + offenders
        let detail = "group \(group): " + (others.isEmpty ? "no other member" : "other members " + others.joined(separator: ", "))
        if offenders.isEmpty { return DoctorCheck("group-viable", .pass, detail) }
        return DoctorCheck("group-viable", .fail, detail + "; bound to host drivers: " + offenders.joined(separator: ", "),
            hint: "QEMU would print 'group \(group) is not viable': 'qlab vfio bind \(device.address)' binds every member that needs it to vfio-pci, or unbind them; or move the card to a slot in another group")
    }

    func driverBound(_ device: PCIDevice) -> DoctorCheck {
        let override = device.driverOverride.map { "; driver_override=\($0)" } ?? ""
        switch device.driver {
        case "vfio-pci":
            return DoctorCheck("driver-bound", .pass, "bound to vfio-pci" + override)
        case let driver?:
            return DoctorCheck("driver-bound", .fail, "bound to \(driver), not vfio-pci" + override,
                hint: "qlab vfio bind \(device.address) (qlab vfio unbind restores \(driver))")
        case nil:
            return DoctorCheck("driver-bound", .fail, "no driver bound" + override, hint: "qlab vfio bind \(device.address)")
        }
    }

    func groupNode(_ device: PCIDevice) -> DoctorCheck {
        guard let group = device.iommuGroup else { return DoctorCheck("vfio-nodes", .skip, "no IOMMU group") }
        let path = roots.dev("vfio/\(group)")
        guard FileSystem.entryExists(path) else {
            if device.driver != "vfio-pci" {
                return DoctorCheck("vfio-nodes", .skip, "\(path) does not exist yet; vfio creates it when the group is bound to vfio-pci")
            }
            return DoctorCheck("vfio-nodes", .fail, "\(path) does not exist although \(device.address) is bound to vfio-pci",
                hint: "check that udev is running and /dev is devtmpfs; rebind with 'qlab vfio unbind' and 'qlab vfio bind'")
        }
        guard HostFiles.canReadWrite(path) else {
            return DoctorCheck("vfio-nodes", .fail, "\(path) exists but this user cannot open it read-write (access(2)); QEMU would print \"Could not open '\(path)'\"",
                hint: "run as root or add a udev rule: SUBSYSTEM==\"vfio\", GROUP=\"kvm\", MODE=\"0660\"")
        }
        return DoctorCheck("vfio-nodes", .pass, "\(path) is readable and writable by this user")
    }

    func intxPin(_ device: PCIDevice) -> DoctorCheck {
        guard let pin = device.config.interruptPin else {
            return DoctorCheck("intx-pin", .warn, "config space unreadable (\(device.config.bytes.count) bytes)", hint: "run as root")
        }
        switch pin {
        case 0: return DoctorCheck("intx-pin", .pass, "interrupt pin (config 0x3D) = 0: no INTx pin; vfio never requests an INTx line for it")
        case 1...4: return DoctorCheck("intx-pin", .pass, "interrupt pin (config 0x3D) = \(pin) (\(PCIConfigSpace.pinName(pin)))")
        default: return DoctorCheck("intx-pin", .warn, "interrupt pin (config 0x3D) = \(pin), not a valid pin", hint: "the card's config space looks broken")
        }
    }

    func irqAssigned(_ device: PCIDevice) -> DoctorCheck {
        let pin = device.interruptPin
        guard pin != 0 else { return DoctorCheck("irq-assigned", .skip, "no INTx pin") }
        guard let irq = device.irq else {
            return DoctorCheck("irq-assigned", .warn, "cannot read \(roots.sys("bus/pci/devices/\(device.address)/irq"))")
        }
        if irq == 0 {
            return DoctorCheck("irq-assigned", .fail,
                "irq = 0: no IRQ routed for \(PCIConfigSpace.pinName(pin)); vfio's INTx setup would fail with ENODEV ('No such device')",
                hint: "enable 'assign IRQ to PCI/VGA' (or PnP OS = no) in the firmware setup, or use another slot")
        }
        return DoctorCheck("irq-assigned", .pass, "irq = \(irq) (config 0x3C line = \(device.config.interruptLine ?? 0))")
    }

    /// Decides whether the card can mask INTx (see ``INTxMasking``).
    func intxMasking(_ device: PCIDevice, _ context: Context) -> INTxMasking {
        if context.noINTxMask == true {
            return INTxMasking(verdict: .no, source: .moduleParameter,
                reason: "vfio_pci nointxmask=Y: vfio-pci treats every card as unable to mask INTx")
        }
        if let entry = KnownPCIDevices.masksINTx(vendor: device.vendorID, device: device.deviceID), let masks = entry.masksINTx {
            return INTxMasking(verdict: masks ? .yes : .no, source: .table,
                reason: "\(device.ids) \(entry.name): \(entry.note ?? (masks ? "masks INTx" : "cannot mask INTx"))")
        }
        if let probed = probe(device) {
            return INTxMasking(verdict: probed ? .yes : .no, source: .probe,
                reason: probed ? "live probe: command bit 10 toggled and read back, restored" : "live probe: command bit 10 did not change when written (reserved before PCI 2.3), restored")
        }
        // QEMU's PCI core makes Interrupt Disable writable for every device it emulates, and
        // stamps the Red Hat/QEMU subsystem 1af4:1100 on those that do not set their own.
        if device.subsystemVendorID == 0x1af4 && device.subsystemDeviceID == 0x1100 {
            return INTxMasking(verdict: .yes, source: .table,
                reason: "emulated by QEMU (subsystem 1af4:1100): QEMU implements Interrupt Disable for every PCI device")
        }
        let config = device.config
        if let command = config.command, command & PCIConfigSpace.commandInterruptDisable != 0 {
            return INTxMasking(verdict: .yes, source: .configSpace, reason: "command register 0x\(PCIDeviceIDs.hex4(command)) has Interrupt Disable (bit 10) set, so the bit is implemented")
        }
        if config.hasPCIExpressCapability {
            return INTxMasking(verdict: .yes, source: .configSpace, reason: "PCI Express capability present (PCI Express requires Interrupt Disable)")
        }
        if let status = config.status, status & PCIConfigSpace.statusInterruptStatus != 0 {
            return INTxMasking(verdict: .yes, source: .configSpace, reason: "status register 0x\(PCIDeviceIDs.hex4(status)) has Interrupt Status (bit 3), a PCI 2.3 feature")
        }
        var reason = "config space shows no PCI 2.3 evidence (bit 10 clear, no PCI Express capability) and the card is not in the table"
        if config.bytes.count < 256 { reason += "; only \(config.bytes.count) bytes of config space readable (not root)" }
        return INTxMasking(verdict: .unknown, source: .none, reason: reason)
    }

    /// Runs the live probe when the policy and the card allow it, else `nil`.
    func probe(_ device: PCIDevice) -> Bool? {
        guard probeAllowed(device) else { return nil }
        return INTxMaskProbe.run(configPath: roots.sys("bus/pci/devices/\(device.address)/config"), writer: writer)
    }

    /// Live /sys only (never a tree given with --sysfs), root only, and only an idle card
    /// no host driver is using.
    func probeAllowed(_ device: PCIDevice) -> Bool {
        guard probePolicy == .automatic, roots.sysfsIsLive, effectiveUserID == 0 else { return false }
        guard device.driver == nil || device.driver == "vfio-pci" || device.driver == "pci-stub" else { return false }
        guard device.enableCount == 0, device.baseClass != 0x06, device.interruptPin != 0 else { return false }
        return true
    }

    func intxMaskingCheck(_ device: PCIDevice, _ masking: INTxMasking) -> DoctorCheck {
        guard device.interruptPin != 0 else { return DoctorCheck("intx-masking", .skip, "no INTx pin") }
        switch masking.verdict {
        case .yes:
            return DoctorCheck("intx-masking", .pass, "can mask INTx: \(masking.reason)")
        case .no:
            let hint = masking.source == .moduleParameter
                ? "drop nointxmask from the vfio-pci options unless a card needs it; otherwise give each card an IRQ line of its own (see intx-shared)"
                : "vfio-pci will request the IRQ exclusively: the card needs a line no other driver uses (see intx-shared)"
            return DoctorCheck("intx-masking", .warn, "cannot mask INTx: \(masking.reason)", hint: hint)
        case .unknown:
            return DoctorCheck("intx-masking", .warn, "unknown: \(masking.reason)",
                hint: "run 'qlab doctor' as root on the live host with the card unbound or bound to vfio-pci to probe it; until then treat it as unable to mask and give it an IRQ line of its own")
        }
    }

    func intxShared(_ device: PCIDevice, _ masking: INTxMasking, _ context: Context) -> DoctorCheck {
        let pin = device.interruptPin
        guard pin != 0 else { return DoctorCheck("intx-shared", .skip, "no INTx pin") }
        guard var irq = device.irq, irq != 0 else { return DoctorCheck("intx-shared", .skip, "no IRQ assigned (see irq-assigned)") }
        guard let table = context.interrupts else {
            return DoctorCheck("intx-shared", .warn, "cannot read \(roots.proc("interrupts"))", hint: "check the procfs root")
        }
        // While a host driver uses MSI, `irq` names the MSI vector; the INTx line vfio will
        // request is the one x86 firmware and Linux write to config 0x3C.
        var prefix = ""
        if let row = table.line(irq: irq), row.chip.contains("MSI") {
            guard let line = device.config.interruptLine, line != 0, line != 0xFF else {
                return DoctorCheck("intx-shared", .warn,
                    "irq \(irq) is an MSI vector of \(device.driver ?? "the host driver") (\(row.chip)); the INTx line is unknown until the card is unbound",
                    hint: "run the doctor again after 'qlab vfio bind \(device.address)'")
            }
            prefix = "irq \(irq) is an MSI vector of \(device.driver ?? "the host driver"); INTx line from config 0x3C: "
            irq = Int(line)
        }
        let sameLine = context.devices.filter { $0.address != device.address && $0.irq == irq && $0.interruptPin != 0 }
        let neighbours = sameLine.isEmpty ? "" : "; other PCI devices with irq \(irq): "
            + sameLine.map { "\($0.address) (\($0.driver ?? "no driver"))" }.joined(separator: ", ")
        guard let line = table.line(irq: irq) else {
            return DoctorCheck("intx-shared", .pass, prefix + "IRQ \(irq) has no handler in /proc/interrupts" + neighbours)
        }
        let others = Self.otherHandlers(line.handlers, device: device)
        let lineText = prefix + "IRQ \(irq) (\(line.chip)\(line.hardwareIRQ.map { " " + $0 } ?? "")) handlers: "
            + (line.handlers.isEmpty ? "none" : line.handlers.joined(separator: ", "))
        if others.isEmpty {
            return DoctorCheck("intx-shared", .pass, lineText + "; no other driver on the line" + neighbours)
        }
        let taken = lineText + "; taken by " + others.joined(separator: ", ") + neighbours
        switch masking.verdict {
        case .yes:
            return DoctorCheck("intx-shared", .pass, taken + "; the card masks INTx, so vfio-pci shares the line")
        case .no, .unknown:
            let status: DoctorCheck.Status = masking.verdict == .no ? .fail : .warn
            let consequence = masking.verdict == .no
                ? "; the card cannot mask INTx, so vfio-pci's exclusive request_irq fails with EBUSY (QEMU: 'Failed to set up TRIGGER eventfd signaling for interrupt INTX-0 ... Device or resource busy')"
                : "; if the card cannot mask INTx, vfio-pci's exclusive request_irq fails with EBUSY"
            let holders = sameLine.filter { $0.driver != nil && $0.driver != "vfio-pci" }
                .map { "\($0.address) from \($0.driver ?? "")" }
            let free = holders.isEmpty
                ? "free IRQ \(irq) by stopping the drivers whose handlers are on it (\(others.joined(separator: ", "))), or "
                : "free IRQ \(irq) by unbinding \(holders.joined(separator: ", ")) (handlers on the line: \(others.joined(separator: ", "))), or "
            let hint = free + slotAdvice(device, irq: irq, context: context)
            return DoctorCheck("intx-shared", status, taken + consequence, hint: hint)
        }
    }

    /// The handlers on the line that are not the device itself: its `vfio-intx(BDF)`
    /// and one handler named after its own host driver are left out.
    static func otherHandlers(_ handlers: [String], device: PCIDevice) -> [String] {
        var others = handlers.filter { $0 != "vfio-intx(\(device.address))" }
        if let driver = device.driver, driver != "vfio-pci",
            let own = others.firstIndex(where: { Self.handler($0, belongsTo: driver) })
        {
            others.remove(at: own)
        }
        return others
    }

    /// `aic7xxx`, `ehci_hcd:usb1` → driver `ehci-pci`? Handlers are named by drivers as they
    /// like; match the name itself or the name before ':'/'-'/'@', with '-' and '_' alike.
    static func handler(_ handler: String, belongsTo driver: String) -> Bool {
        func norm(_ text: Substring) -> String { text.hostReplacing("-", "_") }
        let head = handler.split(whereSeparator: { $0 == ":" || $0 == "@" || $0 == "(" }).first ?? Substring(handler)
        return norm(head) == norm(Substring(driver)) || norm(Substring(handler)) == norm(Substring(driver))
    }

    /// Which slots behind the parent bridge put the card's pin on another bridge line.
    func slotAdvice(_ device: PCIDevice, irq: Int, context: Context) -> String {
        let pin = device.interruptPin
        guard let bridge = device.parentBridge else {
            return "move the card to another slot: it sits on a root bus (no bridge swizzle to use), so which slot gets a free line depends on the board's routing"
        }
        let bridgePin = INTxSwizzle.swizzle(pin: pin, slot: device.address.slot)
        // Lines observed for other devices behind the same bridge: bridge pin -> IRQs.
        var observed: [UInt8: Set<Int>] = [:]
        for sibling in context.devices where sibling.parentBridge == bridge && sibling.address != device.address
            && sibling.address.bus == device.address.bus && sibling.interruptPin != 0
        {
            if let siblingIRQ = sibling.irq, siblingIRQ != 0 {
                observed[INTxSwizzle.swizzle(pin: sibling.interruptPin, slot: sibling.address.slot), default: []].insert(siblingIRQ)
            }
        }
        let bySlot = INTxSwizzle.slotsByBridgePin(pin: pin)
        func slots(_ bridgePin: UInt8) -> String {
            (bySlot[bridgePin] ?? []).map { PCIDeviceIDs.hex4($0).suffix(2) }.joined(separator: " ")
        }
        var parts: [String] = []
        for other in UInt8(1)...4 where other != bridgePin {
            var part = "slots \(slots(other)) → bridge \(PCIConfigSpace.pinName(other))"
            if let irqs = observed[other] {
                part += " (seen on IRQ " + irqs.sorted().map { irq in
                    let handlers = context.interrupts?.line(irq: irq)?.handlers ?? []
                    return "\(irq), " + (handlers.isEmpty ? "no handler" : "handlers " + handlers.joined(separator: "/"))
                }.joined(separator: "; ") + ")"
            }
            parts.append(part)
        }
        return "move the card behind bridge \(bridge) from slot \(PCIDeviceIDs.hex4(device.address.slot).suffix(2)) (pin \(PCIConfigSpace.pinName(pin)) → bridge \(PCIConfigSpace.pinName(bridgePin)) → IRQ \(irq); slots \(slots(bridgePin)) land on the same line) to a slot whose swizzled pin ((pin-1)+slot)%4+1 differs and so reaches another line: "
            + parts.joined(separator: "; ")
    }

    func reset(_ device: PCIDevice, _ context: Context) -> DoctorCheck {
        let cannot = "QEMU will print 'Cannot reset device \(device.address), no available reset mechanism'; usually harmless: the card is reset when the guest powers it up"
        if let methods = device.resetMethods {
            let strong = methods.filter { ["flr", "af_flr", "pm", "device_specific", "acpi"].contains($0) }
            if !strong.isEmpty { return DoctorCheck("reset", .pass, "reset_method: " + methods.joined(separator: " ")) }
            if methods.contains("bus") || methods.contains("cxl_bus") {
                let bus = context.devices.filter { $0.address.bus == device.address.bus && $0.address.domain == device.address.domain && $0.address != device.address }
                let affected = bus.isEmpty ? "" : "; it also resets " + bus.map(\.address.description).joined(separator: ", ")
                return DoctorCheck("reset", .warn, "reset_method: \(methods.joined(separator: " ")): only a secondary bus reset\(affected)",
                    hint: "QEMU can only use it when it owns every device on the bus; otherwise: \(cannot)")
            }
            return DoctorCheck("reset", .warn, "reset_method is empty: no reset", hint: cannot)
        }
        if device.hasResetFile { return DoctorCheck("reset", .pass, "reset attribute present (no reset_method file on this kernel)") }
        return DoctorCheck("reset", .warn, "no reset_method and no reset attribute: no function or bus reset", hint: cannot)
    }

    func rom(_ device: PCIDevice) -> DoctorCheck {
        guard device.hasROM else { return DoctorCheck("rom", .skip, "no rom attribute: no expansion ROM BAR, no option ROM to load") }
        guard let resource = device.romResource else {
            return DoctorCheck("rom", .pass, "rom attribute present (resource line 6 unreadable)")
        }
        let size = resource.end >= resource.start && resource.end != 0 ? resource.end - resource.start + 1 : 0
        if resource.start == 0 {
            return DoctorCheck("rom", .warn, "expansion ROM BAR has no address assigned (resource line 6: start 0, size \(ByteSize(bytes: size).humanReadable))",
                hint: "QEMU may print 'Cannot read device rom at \(device.address)': use rombar=0 (or romfile=FILE with a dump of the card's BIOS) in the lab's passthrough options")
        }
        return DoctorCheck("rom", .pass, "expansion ROM BAR at 0x\(String(resource.start, radix: 16)), \(ByteSize(bytes: size).humanReadable); QEMU offers it to the guest (rombar=0 hides it, romfile= replaces it)")
    }
}

extension Substring {
    func hostReplacing(_ target: Character, _ replacement: Character) -> String {
        String(map { $0 == target ? replacement : $0 })
    }
}

extension String {
    func hostTrimmed() -> String { HostFiles.trim(self) }
}
