import Platform
import QMP

/// One scenario of the nested bench: a claim about qlab on a real kernel,
/// proved by running qlab inside L1 and checking what it printed.
public struct NestedScenario: Sendable {
    /// `doctor`, `bind`, ...: what `qlab nested run` takes.
    public var id: String
    public var title: String
    /// What passing shows, for `qlab nested list` and the docs.
    public var proves: String
    /// The bench lab's guest L1 boots for it: `bench` (vfio-pci nointxmask=1) or `control` (0).
    public var boot: String
    /// It needs the cards' IOMMU group bound to vfio-pci (done first when not yet done in this boot).
    public var needsBoundGroup: Bool
    /// A measurement, a claim that does not hold yet (`loop`) or one too slow for CI (`plug-fail`, `host-scsi`): it runs only when named (`qlab nested run revert-passthrough`),
    /// never in a run of every scenario (it takes minutes under nested TCG).
    public var onlyWhenNamed = false
    let body: @Sendable (NestedContext) async throws -> Void

    /// Every scenario, in the order they run (scenarios sharing a boot run in one L1, in this order).
    public static let all: [NestedScenario] = [doctor, bind, intxBusy, slotFix, hotplug, snapshot, cards, loop, loopMegasas, loopReset, plugFail, hostSCSI, revertPassthrough, control]

    public static func named(_ id: String) -> NestedScenario? { all.first { $0.id == id } }
}

/// What a scenario works with inside one L1 boot.
final class NestedContext {
    let shell: NestedShell
    /// The level-2 labs' directory as a path relative to the shell's working directory (`labs/nested`).
    let l2Labs: String
    /// The host's run directory (beside report.json): files a scenario keeps from L1.
    let runDirectory: String
    /// The host's qlab-bench as L1 sees it (next to the running qlab, under /host).
    var benchExecutable = "qlab-bench"
    /// The group of the bridge's cards is bound to vfio-pci in this boot.
    var groupBound = false

    init(shell: NestedShell, l2Labs: String, runDirectory: String) {
        self.shell = shell
        self.l2Labs = l2Labs
        self.runDirectory = runDirectory
    }

    func lab(_ name: String) -> String { l2Labs + "/" + name + ".yaml" }

    /// Keeps `text` (a file read from L1 over the console) as `name` in the run directory (0644).
    @discardableResult
    func keep(_ text: String, as name: String) -> String? {
        let path = runDirectory + "/" + name
        return (try? FileSystem.writeAtomically(path, Array(text.utf8), mode: 0o644)) != nil ? path : nil
    }
}

// MARK: The bench's facts

/// L1's PCI layout (labs/nested-bench.yaml).
enum NestedBenchFacts {
    /// am53c974 in bridge slot 1: INTA → bridge INTB → IRQ 22, shared with `rootCard`.
    static let slot1 = "0000:01:01.0"
    /// lsi53c895a in bridge slot 2: INTA → bridge INTC → IRQ 23, a line of its own.
    static let slot2 = "0000:01:02.0"
    /// The pcie-pci-bridge the two cards sit behind.
    static let bridge = "0000:00:05.0"
    /// lsi53c895a on the root bus, driven by sym53c8xx in L1; IRQ 22.
    static let rootCard = "0000:00:06.0"
    /// What QEMU 7.2 prints when vfio-pci cannot have the card's line to itself.
    static let triggerError = "Failed to set up TRIGGER eventfd signaling for interrupt INTX-0: VFIO_DEVICE_SET_IRQS failure: Device or resource busy"
    /// The doctor's slot advice for slot 1: the slots whose swizzled pin reaches bridge INTC, slot 2 first.
    static let otherSlotAdvice = "slots 02 06 0a 0e 12 16 1a 1e → bridge INTC"
    /// GRUB's `hexdump -n 32` of the qlab SCSI target's sector 0, first line (images/README.md).
    static let targetSector0Line = "00000000  51 4c 41 42 2d 53 43 53  49 2d 54 41 52 47 45 54  |QLAB-SCSI-TARGET|"
    /// The card labs/nested/loop.yaml passes through (slot 2), and where L2 has it (qlab's
    /// pcie-pci-bridge, slot 1, as qlab hotplugs it).
    static let loopCard = slot2
    static let loopCardInL2 = "0000:01:01.0"
    /// The card labs/nested/loop-megasas.yaml passes through: megasas on L1's root bus, IRQ 20,
    /// a group of its own, no driver in L1.
    static let loopMegasasCard = "0000:00:08.0"
    /// A whole `qlab run` of a level-2 Linux guest under TCG inside TCG (its boot alone is minutes).
    static let innerRunTimeout: Duration = .seconds(1800)
}

// MARK: Helpers over qlab's JSON

/// `qlab doctor --json`: the checks of one device, by id (a later check of the same id wins).
func doctorChecks(_ report: JSONValue?, device: String) -> [String: (status: String, detail: String, hint: String)] {
    var result: [String: (status: String, detail: String, hint: String)] = [:]
    for entry in report?["devices"]?.arrayValue ?? [] where entry["address"]?.stringValue == device {
        for check in entry["checks"]?.arrayValue ?? [] {
            guard let id = check["id"]?.stringValue else { continue }
            result[id] = (check["status"]?.stringValue ?? "", check["detail"]?.stringValue ?? "", check["hint"]?.stringValue ?? "")
        }
    }
    return result
}

/// `query-pci`: the device whose qdev_id is `id`, searched behind bridges too.
func queryPCIDevice(_ reply: JSONValue?, id: String) -> JSONValue? {
    func search(_ devices: [JSONValue]) -> JSONValue? {
        for device in devices {
            if device["qdev_id"]?.stringValue == id { return device }
            if let inner = device["pci_bridge"]?["devices"]?.arrayValue, let found = search(inner) { return found }
        }
        return nil
    }
    for bus in reply?.arrayValue ?? [] {
        if let found = search(bus["devices"]?.arrayValue ?? []) { return found }
    }
    return nil
}

extension NestedOutput {
    /// A doctor check of `device` has `status`; `mentions` must appear in its detail.
    @discardableResult
    func doctorCheck(_ report: JSONValue?, device: String, id: String, status: String, detailMentions: [String] = [], hintMentions: [String] = []) -> Bool {
        let checks = doctorChecks(report, device: device)
        guard let found = checks[id] else {
            return check("\(device) \(id) is reported", false, seen: "no \(id) check for \(device)")
        }
        var ok = check("\(device) \(id): \(status)", found.status == status, seen: "\(found.status): \(found.detail)")
        for needle in detailMentions {
            ok = check("\(device) \(id) names \(needle)", found.detail.contains(needle), seen: found.detail) && ok
        }
        for needle in hintMentions {
            ok = check("\(device) \(id) hint names \"\(needle)\"", found.hint.contains(needle), seen: found.hint) && ok
        }
        return ok
    }

    /// `query-pci` lists the lab device `id` with these PCI ids.
    @discardableResult
    func listsPCIDevice(_ id: String, vendor: Int, device: Int) -> Bool {
        guard let json = json() else { return false }
        guard let found = queryPCIDevice(json, id: id) else {
            return check("query-pci lists '\(id)'", false, seen: "no device with qdev_id '\(id)'")
        }
        let ids = (found["id"]?["vendor"]?.intValue, found["id"]?["device"]?.intValue)
        return check("query-pci lists '\(id)' as \(hex4(vendor)):\(hex4(device))", ids.0 == vendor && ids.1 == device,
                     seen: "ids \(ids.0.map(hex4) ?? "?"):\(ids.1.map(hex4) ?? "?")")
    }
}

private func hex4(_ value: Int) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
}

// MARK: The scenarios

extension NestedScenario {
    typealias Facts = NestedBenchFacts

    /// Binds the cards' group as a scenario's first step, when this boot has not yet.
    static func bindGroup(_ context: NestedContext) async throws {
        let bind = try await context.shell.run("qlab vfio bind \(Facts.slot1)")
        if bind.exits(0) { context.groupBound = true }
    }

    static let doctor = NestedScenario(
        id: "doctor", title: "the doctor predicts the failure from L1's live /sys and /proc",
        proves: "On a real kernel (vfio-pci nointxmask=1), `qlab doctor` fails intx-shared for the card in bridge slot 1, naming sym53c8xx (the root-bus card on IRQ 22) and slot 2 as the way out, passes it for the card in slot 2 (IRQ 23), and group-viable names the group's members and their drivers.",
        boot: "bench", needsBoundGroup: false
    ) { context in
        let shell = context.shell
        let irqs = try await shell.run("grep -E '^ *2[23]:' /proc/interrupts")
        let line22 = irqs.text.split(separator: "\n").first { $0.contains("22:") }.map(String.init) ?? ""
        irqs.check("IRQ 22 carries sym53c8xx and am53c974", line22.contains("sym53c8xx") && line22.contains("am53c974"), seen: line22)
        let doctor = try await shell.run("qlab doctor --device \(Facts.slot1) --device \(Facts.slot2) --memory 64M --json")
        doctor.exits(1)
        let report = doctor.json()
        doctor.check("the report says not ok", report?["ok"]?.boolValue == false)
        doctor.doctorCheck(report, device: Facts.slot1, id: "intx-shared", status: "fail",
                           detailMentions: ["IRQ 22", "sym53c8xx", Facts.rootCard], hintMentions: [Facts.otherSlotAdvice])
        doctor.doctorCheck(report, device: Facts.slot2, id: "intx-shared", status: "pass", detailMentions: ["IRQ 23"])
        doctor.doctorCheck(report, device: Facts.slot1, id: "iommu-group", status: "pass",
                           detailMentions: ["\(Facts.bridge), \(Facts.slot1), \(Facts.slot2)"])
        doctor.doctorCheck(report, device: Facts.slot1, id: "group-viable", status: "fail",
                           detailMentions: ["\(Facts.bridge) (bridge)", "\(Facts.slot2) (sym53c8xx)"])
        doctor.doctorCheck(report, device: Facts.slot2, id: "group-viable", status: "fail",
                           detailMentions: ["\(Facts.bridge) (bridge)", "\(Facts.slot1) (am53c974)"])
    }

    static let bind = NestedScenario(
        id: "bind", title: "qlab vfio bind binds the group for real",
        proves: "`qlab vfio bind` moves both cards of the group from their L1 drivers (am53c974, sym53c8xx) to vfio-pci through driver_override and drivers_probe, leaving the bridge alone; the kernel's driver links and /dev/vfio agree, and the doctor then reports them bound and the group viable.",
        boot: "bench", needsBoundGroup: false
    ) { context in
        let shell = context.shell
        let bind = try await shell.run("qlab vfio bind \(Facts.slot1)")
        bind.exits(0)
        bind.prints("\(Facts.slot1): am53c974 → vfio-pci")
        bind.prints("\(Facts.slot2): sym53c8xx → vfio-pci")
        if bind.status == 0 { context.groupBound = true }
        let links = try await shell.run("ls -l /sys/bus/pci/devices/\(Facts.slot1)/driver /sys/bus/pci/devices/\(Facts.slot2)/driver")
        let drivers = links.text.split(separator: "\n").filter { $0.contains("drivers/") }
        links.check("the kernel binds both cards to vfio-pci", drivers.count == 2 && drivers.allSatisfy { $0.hasSuffix("/vfio-pci") })
        let doctor = try await shell.run("qlab doctor --device \(Facts.slot1) --device \(Facts.slot2) --memory 64M --json")
        let report = doctor.json()
        for card in [Facts.slot1, Facts.slot2] {
            doctor.doctorCheck(report, device: card, id: "driver-bound", status: "pass", detailMentions: ["bound to vfio-pci"])
            doctor.doctorCheck(report, device: card, id: "group-viable", status: "pass", detailMentions: ["\(Facts.bridge) (bridge)"])
            doctor.doctorCheck(report, device: card, id: "vfio-nodes", status: "pass")
        }
        doctor.doctorCheck(report, device: Facts.slot1, id: "group-viable", status: "pass", detailMentions: ["\(Facts.slot2) (vfio-pci)"])
    }

    static let intxBusy = NestedScenario(
        id: "intx-busy", title: "the slot-1 card fails: QEMU's real error, explained",
        proves: "`qlab up` of a lab with the slot-1 card is refused by the host checks (intx-shared, naming sym53c8xx and the bridge slots that reach another line); with --force, QEMU in L1 really fails with 'Failed to set up TRIGGER eventfd signaling for interrupt INTX-0 ... Device or resource busy', qlab prints it with the vfio-intx-busy diagnosis and its fix (move the card to another bridge slot); L1's kernel logged 'genirq: Flags mismatch irq 22', which `qlab diagnose` explains naming IRQ 22 and sym53c8xx.",
        boot: "bench", needsBoundGroup: true
    ) { context in
        let shell = context.shell
        shell.atEnd("qlab down nested-slot1")
        let refused = try await shell.run("qlab up \(context.lab("slot1"))")
        refused.fails()
        refused.prints("host checks failed")
        refused.prints("FAIL  intx-shared")
        refused.prints("taken by sym53c8xx")
        refused.prints(Facts.otherSlotAdvice)
        let forced = try await shell.run("qlab up \(context.lab("slot1")) --force")
        forced.exits(1)
        forced.prints("vfio \(Facts.slot1): " + Facts.triggerError)
        forced.prints("vfio-intx-busy [\(Facts.slot1)]")
        forced.prints("Move the card to another slot behind its bridge")
        let kernel = try await shell.run("dmesg | grep 'genirq: Flags mismatch'")
        kernel.prints("Flags mismatch irq 22. 00000000 (vfio-intx(\(Facts.slot1))) vs. 00000080 (sym53c8xx)")
        // The kernel's side of the story, explained: it names the line and the driver holding it.
        let explained = try await shell.run("dmesg | grep 'genirq: Flags mismatch' | qlab diagnose -")
        explained.prints("vfio-intx-busy [\(Facts.slot1)]")
        explained.prints("IRQ 22 is already used by sym53c8xx")
        explained.prints("unbind the sym53c8xx driver from IRQ 22")
    }

    static let slotFix = NestedScenario(
        id: "slot-fix", title: "the card in slot 2 comes up",
        proves: "The same lab with the card in bridge slot 2 (its pin swizzled onto IRQ 23, a line of its own) passes the host checks and comes up; `qlab qmp LAB query-pci` shows the card (1000:0012) in L2 under the lab's device name, and L1's /proc/interrupts shows vfio-intx on IRQ 23.",
        boot: "bench", needsBoundGroup: true
    ) { context in
        let shell = context.shell
        shell.atEnd("qlab down nested-slot2")
        let up = try await shell.run("qlab up \(context.lab("slot2"))")
        up.exits(0)
        up.prints("lab nested-slot2 up")
        // SeaBIOS numbers L2's bridge a moment after QEMU starts; until then query-pci cannot see behind it.
        let pci = try await shell.run("qlab qmp nested-slot2 query-pci", attempts: 5) { queryPCIDevice(try? JSONValue.parse($0.text), id: "card") != nil }
        pci.exits(0)
        pci.listsPCIDevice("card", vendor: 0x1000, device: 0x0012)
        let irqs = try await shell.run("grep vfio-intx /proc/interrupts")
        irqs.check("vfio-intx(\(Facts.slot2)) holds IRQ 23",
                   irqs.text.split(separator: "\n").contains { $0.contains("23:") && $0.contains("vfio-intx(\(Facts.slot2))") })
    }

    static let hotplug = NestedScenario(
        id: "hotplug", title: "hotplug and unplug into a running L2, twice, id reused",
        proves: "`qlab hotplug` adds the slot-2 card to a running L2 (firmware only) as device 'card', and `qlab unplug` removes it: with no OS to answer the ACPI eject, qlab completes the unplug with system_reset after its timeout; QEMU emits DEVICE_DELETED for 'card' each time, and the same id is used again in the second round.",
        boot: "bench", needsBoundGroup: true
    ) { context in
        let shell = context.shell
        shell.atEnd("qlab down nested-hotplug")
        let up = try await shell.run("qlab up \(context.lab("hotplug"))")
        up.exits(0)
        for _ in 1...2 {
            let plug = try await shell.run("qlab hotplug nested-hotplug card")
            plug.exits(0)
            plug.prints("card attached: vfio-pci at qlab-pcibr0 slot 0x1")
            let present = try await shell.run(#"qlab qmp nested-hotplug qom-get '{"path": "/machine/peripheral/card", "property": "host"}'"#)
            present.exits(0)
            present.prints("\"\(Facts.slot2)\"")
            let unplug = try await shell.run("qlab unplug nested-hotplug card --timeout 1")
            unplug.exits(0)
            unplug.prints("card detached")
        }
        let gone = try await shell.run(#"qlab qmp nested-hotplug qom-list '{"path": "/machine/peripheral"}'"#)
        gone.exits(0)
        gone.doesNotPrint("\"card\"")
        let events = try await shell.run("qlab events nested-hotplug --json | grep DEVICE_DELETED")
        let deleted = events.text.split(separator: "\n").compactMap { try? JSONValue.parse(String($0)) }
            .filter { $0["event"]?.stringValue == "DEVICE_DELETED" && $0["data"]?["device"]?.stringValue == "card" }
        events.check("two DEVICE_DELETED events for 'card'", deleted.count == 2, seen: "\(deleted.count): " + excerpt(events.text))
    }

    static let snapshot = NestedScenario(
        id: "snapshot", title: "snapshots: refused with the card, taken without it",
        proves: "`qlab snapshot save` of an L2 with the card attached at boot fails with QEMU's real text ('VFIO device doesn't support migration') and the migration-blocked diagnosis; with the card hotplugged, qlab's snapshot command unplugs it first, saves, and plugs it back in (QOM shows it again).",
        boot: "bench", needsBoundGroup: true
    ) { context in
        let shell = context.shell
        shell.atEnd("qlab down nested-slot2")
        shell.atEnd("qlab down nested-hotplug")
        let upBoot = try await shell.run("qlab up \(context.lab("slot2"))")
        upBoot.exits(0)
        let refused = try await shell.run("qlab snapshot save nested-slot2 with-card")
        refused.exits(1)
        refused.prints("VFIO device doesn't support migration")
        refused.prints("migration-blocked")
        let down = try await shell.run("qlab down nested-slot2")
        down.exits(0)
        let upHotplug = try await shell.run("qlab up \(context.lab("hotplug")) --paused")
        upHotplug.exits(0)
        let plug = try await shell.run("qlab hotplug nested-hotplug card")
        plug.exits(0)
        let save = try await shell.run("qlab snapshot save nested-hotplug ready --reset-fallback")
        save.exits(0)
        save.prints("unplugged card first")
        save.prints("snapshot 'ready' saved")
        save.prints("plugged card back in at qlab-pcibr0 slot 0x1")
        let back = try await shell.run(#"qlab qmp nested-hotplug qom-get '{"path": "/machine/peripheral/card", "property": "host"}'"#)
        back.exits(0)
        back.prints("\"\(Facts.slot2)\"")
        let list = try await shell.run("qlab snapshot list nested-hotplug")
        list.exits(0)
        list.check("the snapshot 'ready' is listed", list.text.split(separator: "\n").contains { $0.hasPrefix("ready ") })
    }

    static let control = NestedScenario(
        id: "control", title: "control: with nointxmask=0 the slot-1 card works",
        proves: "With vfio-pci masking INTx (nointxmask=0), the doctor's live probe finds the slot-1 card able to mask INTx, so intx-shared passes on the shared line and the doctor predicts no failure; `qlab up` of the slot-1 lab starts without --force, query-pci shows the card (1022:2020), and IRQ 22 is shared by sym53c8xx and vfio-intx.",
        boot: "control", needsBoundGroup: true
    ) { context in
        let shell = context.shell
        shell.atEnd("qlab down nested-slot1")
        let doctor = try await shell.run("qlab doctor --device \(Facts.slot1) --memory 64M --json")
        doctor.exits(0)
        let report = doctor.json()
        doctor.check("the report says ok", report?["ok"]?.boolValue == true)
        doctor.doctorCheck(report, device: Facts.slot1, id: "intx-masking", status: "pass", detailMentions: ["live probe"])
        doctor.doctorCheck(report, device: Facts.slot1, id: "intx-shared", status: "pass", detailMentions: ["IRQ 22", "sym53c8xx", "shares the line"])
        let up = try await shell.run("qlab up \(context.lab("slot1"))")
        up.exits(0)
        up.prints("lab nested-slot1 up")
        let pci = try await shell.run("qlab qmp nested-slot1 query-pci", attempts: 5) { queryPCIDevice(try? JSONValue.parse($0.text), id: "card") != nil }
        pci.exits(0)
        pci.listsPCIDevice("card", vendor: 0x1022, device: 0x2020)
        let irqs = try await shell.run("grep -E '^ *22:' /proc/interrupts")
        irqs.check("IRQ 22 is shared by sym53c8xx and vfio-intx(\(Facts.slot1))",
                   irqs.text.contains("sym53c8xx") && irqs.text.contains("vfio-intx(\(Facts.slot1))"))
    }
}
