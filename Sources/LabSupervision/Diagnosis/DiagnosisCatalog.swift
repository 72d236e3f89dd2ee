/// The problems qlab recognises in QEMU's and the kernel's error text, with
/// the wordings of old and new QEMU (hw/vfio/pci.c, common.c/container.c,
/// helpers.c from 2.x to 9.x) and of the kernel (genirq, vfio_iommu_type1).
///
/// Each entry: an id, cheap keywords that must appear in a line (lower case)
/// before its patterns are tried, the patterns (case-insensitive regular
/// expressions; named groups `bdf`, `irq`, `other`, `group`, `path`, ...
/// feed the texts), and how to explain it.
public struct DiagnosisRule: Sendable {
    public var id: String
    var keywords: [String]
    var patterns: [String]
    /// Whether the first host PCI address on the line is the device concerned.
    var takesDeviceFromLine: Bool
    /// The texts for a match; `[:]` gives the generic wording.
    public var explain: @Sendable (_ captures: [String: String]) -> (summary: String, cause: String, fix: String)
}

public enum DiagnosisCatalog {
    /// Every rule, most specific first: a line is explained by the first rule that matches it.
    public static let rules: [DiagnosisRule] = vfioRules + kvmRules + qemuCrashRules + qemuRules + ramFileRules

    /// The ids in catalog order.
    public static var ids: [String] { rules.map(\.id) }

    static let trigger = #"(?:Failed to set up TRIGGER eventfd signaling for interrupt INTX-\d+|Failed to setup INTx fd)"#

    static let vfioRules: [DiagnosisRule] = [
        DiagnosisRule(
            id: "vfio-intx-busy", keywords: ["intx", "flags mismatch"],
            patterns: [
                trigger + #".*(?:Device or resource busy|EBUSY|\(-16\))"#,
                #"genirq: Flags mismatch irq (?<irq>\d+)\. [0-9a-f]+ \(vfio-intx\((?<bdf>[^)]+)\)\) vs\. [0-9a-f]+ \((?<other>.+)\)\s*$"#,
                #"genirq: Flags mismatch irq (?<irq>\d+)\. [0-9a-f]+ \((?<other>.+?)\) vs\. [0-9a-f]+ \(vfio-intx\((?<bdf>[^)]+)\)\)"#,
            ],
            takesDeviceFromLine: true,
            explain: { c in
                let line = c["irq"].map { "IRQ \($0)" } ?? "its interrupt line"
                let other = c["other"]
                return (
                    summary: "vfio-pci cannot take the card's INTx interrupt: \(line) is already used\(other.map { " by \($0)" } ?? "")",
                    cause: "The card cannot mask INTx (it predates PCI 2.3's Interrupt Disable bit), so vfio-pci must request \(line) exclusively, and \(other.map { "the \($0) driver" } ?? "another driver") already has a handler on it; the kernel refuses with EBUSY (genirq: Flags mismatch).",
                    fix: "Move the card to another slot behind its bridge, one whose swizzled INTx pin lands on a line no other driver uses (see /proc/interrupts), or unbind \(other.map { "the \($0) driver" } ?? "the other driver") from \(line). Never put two cards that cannot mask INTx on one line, and do not load vfio-pci with nointxmask=1."
                )
            }),
        DiagnosisRule(
            id: "vfio-intx-noirq", keywords: ["intx"],
            patterns: [trigger + #".*(?:No such device|ENODEV|\(-19\))"#],
            takesDeviceFromLine: true,
            explain: { _ in
                (
                    summary: "vfio-pci cannot set up the card's INTx interrupt: no IRQ is routed to it",
                    cause: "The host firmware assigned the card no interrupt line (its irq is 0), so vfio-pci answers ENODEV when QEMU asks for INTx.",
                    fix: "Enable \"Assign IRQ to PCI\" (or set PnP OS to no) in the host firmware, or move the card to a slot the firmware routes; check /sys/bus/pci/devices/BDF/irq."
                )
            }),
        DiagnosisRule(
            id: "vfio-kvm-intx", keywords: ["unmask", "resample"],
            patterns: [
                #"Failed to set up (?:UNMASK|RESAMPLE) eventfd signaling"#, #"Failed to setup resample irqfd"#,
                #"Failed to setup INTx unmask fd"#,
            ],
            takesDeviceFromLine: true,
            explain: { _ in
                (
                    summary: "KVM's INTx acceleration for the card could not be set up (a warning)",
                    cause: "QEMU could not route the card's INTx unmask/resample through KVM irqfds and falls back to handling them itself, which is slower but works.",
                    fix: "Usually harmless. To silence it, add `properties: {x-no-kvm-intx: on}` to the device."
                )
            }),
        DiagnosisRule(
            id: "vfio-no-iommu-group", keywords: ["iommu_group"],
            patterns: [#"no iommu_group found"#],
            takesDeviceFromLine: true,
            explain: { _ in
                (
                    summary: "The device has no IOMMU group: the host IOMMU is off",
                    cause: "VFIO needs the IOMMU to isolate the device's DMA; without it the device has no iommu_group link in sysfs.",
                    fix: "Enable VT-d (Intel) or AMD-Vi/IOMMU in the host firmware and boot with intel_iommu=on (or amd_iommu=on) iommu=pt; /sys/kernel/iommu_groups/ must not be empty."
                )
            }),
        DiagnosisRule(
            id: "vfio-group-not-viable", keywords: ["not viable"],
            patterns: [#"group (?<group>\d+) is not viable"#],
            takesDeviceFromLine: true,
            explain: { c in
                let group = c["group"] ?? "N"
                return (
                    summary: "IOMMU group \(group) is not viable: another device in it has a host driver",
                    cause: "VFIO hands out whole IOMMU groups; every device in group \(group) must be bound to vfio-pci (or pci-stub) or have no driver. Behind a PCIe-to-PCI bridge the bridge and all cards behind it share one group.",
                    fix: "List /sys/kernel/iommu_groups/\(group)/devices and bind every other endpoint there to vfio-pci, or unbind it; then start again."
                )
            }),
        // Before vfio-container: QEMU 7.2 reports a pinning failure as "failed to setup
        // container for group N: memory listener initialization failed: ... vfio_dma_map(...) = -12".
        DiagnosisRule(
            id: "vfio-memlock", keywords: ["dma_map", "map_dma", "rlimit_memlock"],
            patterns: [
                #"(?:vfio_dma_map|vfio_container_dma_map|VFIO_MAP_DMA).*(?:-12|Cannot allocate memory|ENOMEM)"#,
                #"RLIMIT_MEMLOCK \((?<limit>\d+)\) exceeded"#,
            ],
            takesDeviceFromLine: false,
            explain: { c in
                (
                    summary: "VFIO cannot pin the guest's memory: the locked-memory limit is too low",
                    cause: "A VM with a passed-through device pins all of its RAM for DMA, and RLIMIT_MEMLOCK\(c["limit"].map { " (\($0))" } ?? "") is below the guest's memory.",
                    fix: "Raise the limit above guest RAM: `ulimit -l unlimited` before qlab up, LimitMEMLOCK=infinity in a systemd unit, or a memlock line in /etc/security/limits.d/; or give QEMU CAP_IPC_LOCK."
                )
            }),
        DiagnosisRule(
            id: "vfio-unsafe-interrupts", keywords: ["operation not permitted", "interrupt remapping"],
            patterns: [#"set iommu for container: Operation not permitted"#, #"No interrupt remapping support"#],
            takesDeviceFromLine: true,
            explain: { _ in
                (
                    summary: "VFIO refuses the IOMMU: the host has no interrupt remapping",
                    cause: "Without interrupt remapping a device could inject arbitrary MSIs, so vfio_iommu_type1 refuses VFIO_SET_IOMMU with EPERM (the kernel logs \"No interrupt remapping support\").",
                    fix: "Enable interrupt remapping (VT-d/AMD-Vi with x2APIC/IR in the host firmware); or, trusting the guest, load vfio_iommu_type1 with allow_unsafe_interrupts=1 (options vfio_iommu_type1 allow_unsafe_interrupts=1)."
                )
            }),
        DiagnosisRule(
            id: "vfio-container", keywords: ["/dev/vfio/vfio", "container", "iommu models", "vfio_set_iommu"],
            patterns: [
                #"/dev/vfio/vfio"#, #"failed to setup container for group"#, #"Failed to set group container"#,
                #"failed to set iommu for container"#, #"No available IOMMU models"#, #"VFIO_SET_IOMMU"#,
            ],
            takesDeviceFromLine: true,
            explain: { _ in
                (
                    summary: "QEMU cannot set up a VFIO container (the IOMMU backend)",
                    cause: "/dev/vfio/vfio is missing or not accessible, or no IOMMU driver (vfio_iommu_type1) is available for the group.",
                    fix: "modprobe vfio_iommu_type1 vfio-pci, make sure the IOMMU is enabled (intel_iommu=on / amd_iommu=on), and check that /dev/vfio/vfio exists and this user can open it."
                )
            }),
        DiagnosisRule(
            id: "vfio-group-open", keywords: ["/dev/vfio/"],
            patterns: [#"(?:failed to open|Could not open|error opening) '?/dev/vfio/(?<group>\d+)"#],
            takesDeviceFromLine: true,
            explain: { c in
                let node = "/dev/vfio/\(c["group"] ?? "N")"
                return (
                    summary: "QEMU cannot open the VFIO group \(node)",
                    cause: "Either the device is not bound to vfio-pci (then \(node) does not exist), or it exists but belongs to root and QEMU runs as another user.",
                    fix: "Bind the card to vfio-pci (driver_override, then drivers_probe), then give QEMU's user access to \(node) (a udev rule SUBSYSTEM==\"vfio\", OWNER=..., or chown), or run QEMU as root."
                )
            }),
        DiagnosisRule(
            id: "vfio-device-get", keywords: ["from group"],
            patterns: [#"error getting device (?:\S+ )?from group (?<group>\d+)"#],
            takesDeviceFromLine: true,
            explain: { c in
                (
                    summary: "QEMU cannot get the device from VFIO group \(c["group"] ?? "N")",
                    cause: "VFIO_GROUP_GET_DEVICE_FD failed: the device is not bound to vfio-pci, or another process (another QEMU) already has it open.",
                    fix: "Check that /sys/bus/pci/devices/BDF/driver points to vfio-pci, and stop the other QEMU using the device (`qlab list` shows which lab holds it)."
                )
            }),
        DiagnosisRule(
            id: "vfio-already-attached", keywords: ["already attached"],
            patterns: [#"device is already attached"#],
            takesDeviceFromLine: true,
            explain: { _ in
                (
                    summary: "The host device is already attached to this QEMU",
                    cause: "The same host= address is given twice, or a previous hotplug of it is still present (an unplug not yet completed).",
                    fix: "Remove the duplicate device; after an unplug, wait for DEVICE_DELETED before adding the card again."
                )
            }),
        DiagnosisRule(
            id: "vfio-rom", keywords: ["rom"],
            patterns: [#"Cannot read device rom"#, #"Error getting ROM info"#, #"Error reading device ROM"#],
            takesDeviceFromLine: true,
            explain: { _ in
                (
                    summary: "The card's option ROM cannot be read through VFIO",
                    cause: "The ROM BAR is absent or disabled, or its contents are not a valid ROM image; the guest would see no or a broken option ROM.",
                    fix: "Set `rombar: false` on the device (QEMU rombar=0, or rombar=off where `-device vfio-pci,help` lists rombar=<OnOffAuto>; qlab asks its QEMU), or give a dumped ROM image with `romfile:`."
                )
            }),
        DiagnosisRule(
            id: "vfio-reset", keywords: ["reset"],
            patterns: [#"Cannot reset device"#, #"hot reset info failed"#, #"no available reset mechanism"#],
            takesDeviceFromLine: true,
            explain: { c in
                (
                    summary: "QEMU cannot reset the card (a warning)",
                    cause: "The card has no function-level reset and no bus reset is possible (the bus is shared with devices this VM does not own), as is usual for conventional PCI cards behind a bridge.",
                    fix: "Usually harmless: QEMU carries on. If the card misbehaves after a guest reboot, restart QEMU (qlab down/up) so the card is power-cycled by its driver rebinding, or use strategy: reset with a fresh QEMU."
                )
            }),
        DiagnosisRule(
            id: "vfio-no-host-device", keywords: ["no such host device"],
            patterns: [#"no such host device"#],
            takesDeviceFromLine: true,
            explain: { _ in
                (
                    summary: "There is no PCI device at that host address",
                    cause: "vfio-pci's host= names an address that does not exist in /sys/bus/pci/devices on this machine.",
                    fix: "Check the address with `lspci -D`, fix `passthrough.host` in the lab file, or select the card by `ids:` (vendor:device)."
                )
            }),
        DiagnosisRule(
            id: "migration-blocked", keywords: ["migrat"],
            patterns: [
                #"VFIO device doesn't support migration"#,
                #"(?:(?<bdf>[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]): )?VFIO migration is not supported"#,
                #"State blocked by non-migratable device"#, #"non-migratable device"#,
            ],
            // "non-migratable device '0000:00:05.0/vfio'" names the guest's slot, not the host's.
            takesDeviceFromLine: false,
            explain: { _ in
                (
                    summary: "The snapshot is refused: a passed-through device cannot be migrated",
                    cause: "vfio devices have no migratable state, so QEMU refuses to save or load VM state (a snapshot is a migration to the disk) while one is attached.",
                    fix: "Unplug passthrough devices before saving or loading (qlab does this for `attach: hotplug` devices); a device attached at boot needs `strategy: reset` instead of snapshots."
                )
            }),
        // The kernel's IOMMU fault report: Intel (6.x: "DMAR: [DMA Read NO_PASID] Request device
        // [01:00.0] fault addr 0xfe400000 [fault reason 0x06] PTE Read access is not set"; 5.x has
        // "PASID ffffffff" and no 0x) and AMD ("AMD-Vi: Event logged [IO_PAGE_FAULT ...]").
        DiagnosisRule(
            id: "iommu-dma-fault", keywords: ["fault addr", "io_page_fault"],
            patterns: [
                #"DMAR: ?\[DMA (?<access>Read|Write)[^\]]*\] Request device \[(?<req>[0-9a-fA-F:.]+)\].*fault addr (?:0x)?(?<addr>[0-9a-fA-F]+)"#,
                #"IO_PAGE_FAULT (?:device=(?<req>[0-9a-fA-F:.]+) )?.*address=(?:0x)?(?<addr>[0-9a-fA-F]+)"#,
            ],
            takesDeviceFromLine: true,
            explain: { c in
                let access = c["access"].map { " " + $0.lowercased() } ?? ""
                let who = c["req"].map { "device \($0)" } ?? "a device"
                let at = c["addr"].map { " at 0x\($0)" } ?? ""
                return (
                    summary: "The IOMMU blocked a DMA\(access) by \(who)\(at): the address is not mapped for it",
                    cause: "A device under vfio has only the guest's RAM in its IOMMU domain (and the BARs of passed-through cards while QEMU has them mmap'd; without KVM, QEMU unmaps them whenever the card's INTx is pending), so DMA to anything else faults: to the card's own or a peer's BAR, or to an address the guest driver got wrong. A conventional PCI card behind a PCIe-to-PCI bridge is reported as the bridge's secondary bus, device 00.0. A card that keeps faulting floods the host with fault interrupts and the guest stalls.",
                    fix: "Compare the address with the card's BARs in the guest (lspci -v, /sys/bus/pci/devices/*/resource): DMA to its own BAR is the guest driver using on-card memory through the bus (QEMU's lsi53c895a model fetches SCRIPTS from its on-chip RAM this way; a real 53C8xx reads it internally): run such a card's guest with KVM, or a driver setting that keeps the data in RAM. An address in RAM the guest no longer owns is a stale driver state: unplug and plug the card (qlab's revert does) rather than keeping it across a revert."
                )
            }),
    ]

    static let kvmRules: [DiagnosisRule] = [
        DiagnosisRule(
            id: "kvm-unavailable", keywords: ["kvm"],
            patterns: [#"Could not access KVM kernel module"#, #"failed to initialize kvm"#, #"KVM not supported"#, #"no accelerator found"#],
            takesDeviceFromLine: false,
            explain: { _ in
                (
                    summary: "QEMU cannot use KVM",
                    cause: "/dev/kvm is missing (no kvm_intel/kvm_amd module, or virtualization disabled in the firmware) or this user cannot open it.",
                    fix: "Use `machine: {accel: auto}` (qlab then falls back to TCG) or tcg; or load the KVM module and give the user access to /dev/kvm (the kvm group)."
                )
            }),
        DiagnosisRule(
            id: "kvm-cpu-rejected", keywords: ["msr"],
            patterns: [#"failed to set MSR 0x[0-9a-f]+"#, #"kvm_buf_set_msrs"#],
            takesDeviceFromLine: false,
            explain: { _ in
                (
                    summary: "KVM rejected the CPU state QEMU set (e.g. -cpu host)",
                    cause: "This KVM refuses an MSR QEMU writes for the CPU model; kvm_pvm (a paravirtual KVM that runs only PVM-aware kernels) does this for -cpu host.",
                    fix: "Use `machine: {accel: auto}` (qlab picks TCG on kvm_pvm) or tcg, or a named CPU model instead of host."
                )
            }),
    ]

    static let qemuRules: [DiagnosisRule] = [
        DiagnosisRule(
            id: "romfile-missing", keywords: ["romfile"],
            patterns: [#"failed to find romfile "(?<path>[^"]*)""#],
            takesDeviceFromLine: false,
            explain: { c in
                (
                    summary: "QEMU cannot read the option ROM image \(c["path"].map { "'\($0)' " } ?? "")given to the card",
                    cause: "A PCI device's `romfile` names the option ROM QEMU shows the guest; QEMU reads it when the device is added (at start or by device_add, so at every hotplug), and refuses the device when the file is missing or unreadable. A relative name is looked up in QEMU's firmware directories.",
                    fix: "Put the ROM image back at that path (an absolute path is safest), fix `passthrough.romfile` (or the device's `romfile` property) in the lab file, or drop it to use the card's own ROM."
                )
            }),
        DiagnosisRule(
            id: "image-locked", keywords: ["lock", "another process using the image"],
            patterns: [#"Failed to get (?:shared )?"[a-z ]+" lock"#, #"Is another process using the image \[(?<path>[^\]]+)\]"#],
            takesDeviceFromLine: false,
            explain: { c in
                (
                    summary: "The image \(c["path"].map { "\($0) " } ?? "")is locked by another process",
                    cause: "Another process, usually another QEMU, holds the image's write lock; QEMU refuses to open an image two writers could corrupt.",
                    fix: "Stop the other QEMU (`qlab list`, then `qlab down LAB`), or give this VM its own overlay; qlab opens base images read-only behind per-lab overlays."
                )
            }),
        DiagnosisRule(
            id: "snapshot-unsupported", keywords: ["does not support snapshots"],
            patterns: [#"Device '(?<node>[^']+)' is writable but does not support snapshots"#],
            takesDeviceFromLine: false,
            explain: { c in
                (
                    summary: "Snapshots are impossible: \(c["node"] ?? "a drive") is writable but not qcow2",
                    cause: "Internal snapshots need every writable drive to be qcow2; a raw drive (often a raw UEFI variable store on pflash) blocks savevm.",
                    fix: "Make it qcow2 (qlab creates UEFI variable stores as qcow2) or attach it read-only."
                )
            }),
        DiagnosisRule(
            id: "snapshot-no-disk", keywords: ["vmstate", "snapshots"],
            patterns: [#"no block device can store vmstate"#, #"No block device supports snapshots"#, #"No block device can accept snapshots"#],
            takesDeviceFromLine: false,
            explain: { _ in
                (
                    summary: "Snapshots are impossible: the VM has no qcow2 disk to hold them",
                    cause: "Internal snapshots (and the saved RAM) live in a qcow2 image attached to the VM; this VM has none.",
                    fix: "Give the guest a `disk:` (qlab runs it on a qcow2 overlay), or use `strategy: reset`."
                )
            }),
        DiagnosisRule(
            id: "image-missing", keywords: ["no such file"],
            patterns: [#"Could not open '(?<path>[^']+)': No such file or directory"#],
            takesDeviceFromLine: false,
            explain: { c in
                (
                    summary: "\(c["path"] ?? "A file QEMU needs") does not exist",
                    cause: "QEMU was given a path to an image, kernel or firmware file that is not there.",
                    fix: "Build the images (images/build.sh) or fix the path in the lab file (relative paths are relative to the lab file)."
                )
            }),
        DiagnosisRule(
            id: "device-unknown-driver", keywords: ["not a valid device model name"],
            patterns: [#"'(?<driver>[^']+)' is not a valid device model name"#],
            takesDeviceFromLine: false,
            explain: { c in
                (
                    summary: "This QEMU has no device model '\(c["driver"] ?? "?")'",
                    cause: "The driver name is misspelt, or this QEMU build does not include the device.",
                    fix: "List the models with `qemu-system-x86_64 -device help`, and fix the name (or use a QEMU built with the device)."
                )
            }),
        DiagnosisRule(
            id: "device-bad-property", keywords: ["not found"],
            patterns: [#"Property '(?<property>[^']+)' not found"#],
            takesDeviceFromLine: false,
            explain: { c in
                let property = c["property"] ?? "?"
                let driver = property.split(separator: ".").first.map(String.init) ?? "DRIVER"
                return (
                    summary: "QEMU has no property \(property)",
                    cause: "A -device property is misspelt or does not exist in this QEMU version.",
                    fix: "List the device's properties with `qemu-system-x86_64 -device \(driver),help` and fix `properties:` in the lab file."
                )
            }),
        DiagnosisRule(
            id: "bus-not-found", keywords: ["not found"],
            patterns: [#"Bus '(?<bus>[^']+)' not found"#],
            takesDeviceFromLine: false,
            explain: { c in
                (
                    summary: "There is no bus '\(c["bus"] ?? "?")'",
                    cause: "A device names a bus that does not exist on this machine type.",
                    fix: "Fix `bus:` (q35's root bus is pcie.0 and qlab's bridge is qlab-pcibr0; pc's root bus is pci.0), or leave it out and let qlab place the card."
                )
            }),
        DiagnosisRule(
            id: "pci-slot-in-use", keywords: ["not available for"],
            patterns: [#"PCI: slot (?<slot>\d+) function (?<function>\d+) not available for (?<driver>[^,]+), in use by (?<other>.+)$"#],
            takesDeviceFromLine: false,
            explain: { c in
                (
                    summary: "PCI slot \(c["slot"] ?? "?") is already taken\(c["other"].map { " by \($0)" } ?? "")",
                    cause: "Two devices were given the same bus and slot.",
                    fix: "Give one of them another `addr:`, or remove the explicit address and let qlab place it."
                )
            }),
        DiagnosisRule(
            id: "bus-no-hotplug", keywords: ["does not support hotplugging"],
            patterns: [#"Bus '(?<bus>[^']+)' does not support hotplugging"#],
            takesDeviceFromLine: false,
            explain: { c in
                (
                    summary: "Bus \(c["bus"] ?? "?") takes no hotplugged devices",
                    cause: "On q35 the root bus pcie.0 has no hotplug; cards must be hotplugged behind a bridge or a root port.",
                    fix: "Leave `bus:` out so qlab puts the card behind its pcie-pci-bridge (qlab-pcibr0), or attach the device at boot."
                )
            }),
        DiagnosisRule(
            id: "duplicate-id", keywords: ["duplicate id"],
            patterns: [#"Duplicate ID '(?<id>[^']+)' for"#],
            takesDeviceFromLine: false,
            explain: { c in
                (
                    summary: "A device with id '\(c["id"] ?? "?")' already exists",
                    cause: "The id is in use: the device is still attached, or its unplug has not completed.",
                    fix: "Unplug it first and wait for DEVICE_DELETED (`qlab unplug`), or use another id."
                )
            }),
        DiagnosisRule(
            id: "unplug-pending", keywords: ["in the process of unplug"],
            patterns: [#"Device (?<id>\S+) is already in the process of unplug"#],
            takesDeviceFromLine: false,
            explain: { c in
                (
                    summary: "The unplug of \(c["id"] ?? "the device") is still waiting for the guest",
                    cause: "PCI unplug needs the guest's ACPI/SHPC handshake; a paused VM, or one with no OS or no hotplug driver, never answers.",
                    fix: "Let the guest run so it can acknowledge; otherwise a system_reset completes the pending unplug (about 50 ms on QEMU 7.2). `qlab unplug` does this and says so."
                )
            }),
        DiagnosisRule(
            id: "socket-path-too-long", keywords: ["is too long"],
            patterns: [#"UNIX socket path '(?<path>[^']+)' is too long"#],
            takesDeviceFromLine: false,
            explain: { _ in
                (
                    summary: "A Unix socket path is longer than the 107 bytes sockets allow",
                    cause: "QMP and console sockets live in the lab's runtime directory, and its path is too long.",
                    fix: "Set QLAB_RUNTIME_DIR (or XDG_RUNTIME_DIR) to a short directory."
                )
            }),
        DiagnosisRule(
            id: "socket-in-use", keywords: ["address already in use"],
            patterns: [#"Failed to bind socket(?: to (?<path>\S+))?: Address already in use"#],
            takesDeviceFromLine: false,
            explain: { c in
                (
                    summary: "A socket QEMU must listen on is in use\(c["path"].map { ": \($0)" } ?? "")",
                    cause: "Another process (another QEMU of the same lab) listens there.",
                    fix: "Stop the other instance (`qlab down LAB`) or use another port/path."
                )
            }),
    ]
}
