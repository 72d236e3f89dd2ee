import Testing
import QMP
@testable import LabCore

@Suite struct HostDoctorTests {
    /// The doctor as tests run it: tree roots, and a writer that would record any write.
    func doctor(_ tree: SysfsTreeBuilder, writer: SysfsWriter = SysfsWriter()) -> HostDoctor {
        var doctor = HostDoctor(roots: tree.roots, writer: writer)
        doctor.effectiveUserID = 0  // as root: the live probe must still not touch a tree
        return doctor
    }

    func status(_ report: DoctorReport, _ device: String, _ id: String) -> DoctorCheck.Status? {
        report.device(device)?.check(id)?.status
    }

    @Test func originalBenchSharedLineFailsAndNamesTheOtherHandler() throws {
        let tree = try SysfsTreeBuilder.originalBench(cardSlot: 4, irq: 16)
        let report = doctor(tree).run(devices: [.address(.bdf("0000:03:04.0"))], guestMemory: nil)
        let card = try #require(report.device("0000:03:04.0"))
        #expect(card.check("intx-pin")?.detail.contains("INTA") == true)
        #expect(card.check("irq-assigned")?.status == .pass)
        let masking = try #require(card.check("intx-masking"))
        #expect(masking.status == .warn)
        #expect(masking.detail.contains("cannot mask INTx"))
        #expect(masking.detail.contains("AIC-7850"))
        let shared = try #require(card.check("intx-shared"))
        #expect(shared.status == .fail)
        #expect(shared.detail.contains("taken by ehci_hcd:usb1"))
        #expect(!shared.detail.contains("taken by ehci_hcd:usb1, aic7xxx"), "the card's own handler is not another user")
        #expect(shared.detail.contains("0000:00:1d.0 (ehci-pci)"))
        #expect(shared.detail.contains("EBUSY"))
        // Slot 04 swizzles INTA to the bridge's INTA; slots 01/05/... land on INTB.
        #expect(shared.hint.contains("bridge 0000:02:00.0"))
        #expect(shared.hint.contains("slots 01 05 09 0d 11 15 19 1d → bridge INTB"))
        #expect(shared.hint.contains("slots 00 04 08 0c 10 14 18 1c land on the same line"))
        #expect(shared.hint.contains("free IRQ 16 by unbinding 0000:00:1d.0 from ehci-pci (handlers on the line: ehci_hcd:usb1)"))
        #expect(card.check("driver-bound")?.status == .fail)
        #expect(card.check("driver-bound")?.detail.contains("aic7xxx") == true)
        #expect(card.check("group-viable")?.status == .pass, "the only other member is the bridge")
        #expect(card.check("reset")?.status == .warn)
        #expect(card.check("rom")?.status == .pass)
        #expect(!report.ok)
        #expect(report.hostCheck("iommu-enabled")?.status == .pass)
        #expect(report.hostCheck("vfio-module")?.status == .pass)
    }

    @Test func originalBenchOtherSlotOnAFreeLinePasses() throws {
        let tree = try SysfsTreeBuilder.originalBench(cardSlot: 5, irq: 17, cardDriver: "vfio-pci")
        let report = doctor(tree).run(devices: [.ids(vendor: 0x9004, device: 0x5078)], guestMemory: 256 << 20)
        let card = try #require(report.device("0000:03:05.0"))
        #expect(card.check("intx-masking")?.status == .warn)
        let shared = try #require(card.check("intx-shared"))
        #expect(shared.status == .pass)
        #expect(shared.detail.contains("IRQ 17 has no handler"))
        #expect(card.check("driver-bound")?.status == .pass)
        #expect(card.check("vfio-nodes")?.status == .pass)
        // 8 MiB default limit against 256 MiB of guest RAM.
        #expect(report.hostCheck("memlock")?.status == .fail)
        try tree.setMemlock(nil)
        let unlimited = doctor(tree).run(devices: [.ids(vendor: 0x9004, device: 0x5078)], guestMemory: 256 << 20)
        #expect(unlimited.hostCheck("memlock")?.status == .pass)
        #expect(unlimited.ok, "\(unlimited.failures.map(\.check))")
    }

    @Test func sharedLineWithVFIOHandlerOfItsOwnIsNotAConflict() throws {
        let tree = try SysfsTreeBuilder.originalBench(cardSlot: 5, irq: 17, cardDriver: "vfio-pci")
        try tree.setInterrupts([.init(irq: 16, handlers: ["ehci_hcd:usb1"]), .init(irq: 17, handlers: ["vfio-intx(0000:03:05.0)"])])
        let report = doctor(tree).run(devices: [.address(.bdf("0000:03:05.0"))], guestMemory: nil)
        #expect(status(report, "0000:03:05.0", "intx-shared") == .pass)
        try tree.setInterrupts([.init(irq: 17, handlers: ["vfio-intx(0000:03:05.0)", "snd_hda_intel:card0"])])
        let taken = doctor(tree).run(devices: [.address(.bdf("0000:03:05.0"))], guestMemory: nil)
        #expect(status(taken, "0000:03:05.0", "intx-shared") == .fail)
        #expect(taken.device("0000:03:05.0")?.check("intx-shared")?.detail.contains("taken by snd_hda_intel:card0") == true)
    }

    @Test func siblingLinesAreReportedInTheSlotAdvice() throws {
        let tree = try SysfsTreeBuilder.originalBench(cardSlot: 4, irq: 16)
        // A second card in slot 05 (INTA → bridge INTB) is routed to IRQ 17, which is free.
        try tree.add(.init(address: .bdf("0000:03:05.0"), vendor: 0x1000, device: 0x0012, interruptPin: 1, irq: 17, group: 7),
            parent: SysfsTreeBuilder.pericom)
        let report = doctor(tree).run(devices: [.address(.bdf("0000:03:04.0"))], guestMemory: nil)
        let hint = try #require(report.device("0000:03:04.0")?.check("intx-shared")?.hint)
        #expect(hint.contains("→ bridge INTB (seen on IRQ 17, no handler)"))
    }

    @Test func groupNotViableNamesTheOffenders() throws {
        let tree = try SysfsTreeBuilder.originalBench(cardSlot: 5, irq: 17, cardDriver: "vfio-pci")
        try tree.add(.init(address: .bdf("0000:03:06.0"), vendor: 0x1000, device: 0x0012, interruptPin: 1, irq: 18,
            driver: "sym53c8xx", group: 7), parent: SysfsTreeBuilder.pericom)
        let report = doctor(tree).run(devices: [.address(.bdf("0000:03:05.0"))], guestMemory: nil)
        let viable = try #require(report.device("0000:03:05.0")?.check("group-viable"))
        #expect(viable.status == .fail)
        #expect(viable.detail.contains("0000:03:06.0 (sym53c8xx)"))
        #expect(!viable.detail.contains("bound to host drivers: 0000:02:00.0"))
        #expect(viable.hint.contains("group 7 is not viable"))
        #expect(!report.ok)
    }

    @Test func iommuSwitchedOff() throws {
        let tree = try SysfsTreeBuilder()
        try tree.loadVFIO()
        try tree.setCommandLine("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro intel_iommu=off")
        try tree.add(.init(address: .bdf("0000:00:00.0"), vendor: 0x8086, device: 0x29c0, classCode: 0x060000, interruptPin: 0))
        try tree.add(.init(address: .bdf("0000:00:05.0"), vendor: 0x9004, device: 0x5078, revision: 3, interruptPin: 1, irq: 11, driver: "aic7xxx"))
        let report = doctor(tree).run(devices: [.address(.bdf("0000:00:05.0"))], guestMemory: nil)
        let iommu = try #require(report.hostCheck("iommu-enabled"))
        #expect(iommu.status == .fail)
        #expect(iommu.detail.contains("0 IOMMU group(s)"))
        #expect(iommu.detail.contains("intel_iommu=off"))
        #expect(iommu.hint.contains("switches the IOMMU off"))
        #expect(iommu.hint.contains("intel_iommu=on"))
        #expect(status(report, "0000:00:05.0", "iommu-group") == .fail)
        #expect(status(report, "0000:00:05.0", "group-viable") == .skip)
        // On a root bus there is no bridge swizzle to suggest.
        try tree.setInterrupts([.init(irq: 11, handlers: ["aic7xxx", "i801_smbus"])])
        let shared = doctor(tree).run(devices: [.address(.bdf("0000:00:05.0"))], guestMemory: nil)
        #expect(shared.device("0000:00:05.0")?.check("intx-shared")?.hint.contains("root bus") == true)
    }

    @Test func amdHostGetsAMDOption() throws {
        let tree = try SysfsTreeBuilder()
        try tree.write("proc/cpuinfo", "processor\t: 0\nvendor_id\t: AuthenticAMD\n")
        let report = doctor(tree).run(devices: [], guestMemory: nil)
        #expect(report.hostCheck("iommu-enabled")?.hint.contains("amd_iommu=on") == true)
        #expect(report.hostCheck("vfio-module")?.status == .fail)
        #expect(report.hostCheck("vfio-nodes")?.status == .fail)
        #expect(report.hostCheck("memlock")?.status == .skip)
    }

    @Test func deviceWithINTxMaskingSharesItsLine() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        // A PCI Express card (QEMU's e1000e) on the EHCI controller's line.
        try tree.add(.init(address: .bdf("0000:00:02.0"), vendor: 0x8086, device: 0x10d3, classCode: 0x020000,
            capabilities: [0x01, 0x10, 0x11], interruptPin: 1, irq: 16, driver: "vfio-pci", group: 9, resetMethod: "flr bus"))
        let report = doctor(tree).run(devices: [.address(.bdf("0000:00:02.0"))], guestMemory: nil)
        let masking = try #require(report.device("0000:00:02.0")?.check("intx-masking"))
        #expect(masking.status == .pass)
        #expect(masking.detail.contains("PCI Express capability"))
        let shared = try #require(report.device("0000:00:02.0")?.check("intx-shared"))
        #expect(shared.status == .pass)
        #expect(shared.detail.contains("shares the line"))
        #expect(status(report, "0000:00:02.0", "reset") == .pass)
        // The same card with the command register's bit 10 set, no capability: still yes.
        try tree.add(.init(address: .bdf("0000:00:03.0"), vendor: 0x1af4, device: 0x1000, classCode: 0x020000,
            command: 0x0407, interruptPin: 1, irq: 16, group: 10))
        let bit10 = doctor(tree).run(devices: [.address(.bdf("0000:00:03.0"))], guestMemory: nil)
        #expect(bit10.device("0000:00:03.0")?.check("intx-masking")?.detail.contains("bit 10") == true)
        #expect(status(bit10, "0000:00:03.0", "intx-shared") == .pass)
    }

    @Test func msiVectorIsNotTheINTxLine() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        // An unknown card whose host driver uses MSI: `irq` is the MSI vector 45; INTx is line 16.
        try tree.add(.init(address: .bdf("0000:00:04.0"), vendor: 0x10b7, device: 0x9050, classCode: 0x020000,
            interruptPin: 1, irq: 45, interruptLine: 16, driver: "3c59x", group: 11))
        try tree.setInterrupts([.init(irq: 16, handlers: ["ehci_hcd:usb1"]),
            .init(irq: 45, chip: "PCI-MSI", flow: "edge", handlers: ["3c59x"])])
        let report = HostDoctor(roots: tree.roots, probePolicy: .never).run(devices: [.address(.bdf("0000:00:04.0"))], guestMemory: nil)
        let shared = try #require(report.device("0000:00:04.0")?.check("intx-shared"))
        #expect(shared.status == .warn)
        #expect(shared.detail.hasPrefix("irq 45 is an MSI vector of 3c59x; INTx line from config 0x3C: IRQ 16"))
        #expect(shared.detail.contains("taken by ehci_hcd:usb1"))
    }

    @Test func nointxmaskMakesEveryCardUnableToMask() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        try tree.loadVFIO(noINTxMask: true)
        try tree.add(.init(address: .bdf("0000:00:02.0"), vendor: 0x8086, device: 0x10d3, classCode: 0x020000,
            capabilities: [0x10], interruptPin: 1, irq: 16, driver: "vfio-pci", group: 9))
        let report = doctor(tree).run(devices: [.address(.bdf("0000:00:02.0"))], guestMemory: nil)
        let masking = try #require(report.device("0000:00:02.0")?.check("intx-masking"))
        #expect(masking.status == .warn)
        #expect(masking.detail.contains("nointxmask=Y"))
        #expect(status(report, "0000:00:02.0", "intx-shared") == .fail)
        #expect(report.hostCheck("vfio-module")?.status == .warn)
    }

    @Test func unknownCardIsAWarningNeverASilentPass() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        try tree.add(.init(address: .bdf("0000:00:04.0"), vendor: 0x10b7, device: 0x9050, classCode: 0x020000,
            interruptPin: 1, irq: 16, group: 11))
        let report = doctor(tree).run(devices: [.address(.bdf("0000:00:04.0"))], guestMemory: nil)
        let masking = try #require(report.device("0000:00:04.0")?.check("intx-masking"))
        #expect(masking.status == .warn)
        #expect(masking.detail.hasPrefix("unknown"))
        let shared = try #require(report.device("0000:00:04.0")?.check("intx-shared"))
        #expect(shared.status == .warn)
        #expect(shared.detail.contains("taken by ehci_hcd:usb1"))
    }

    @Test func qemuEmulatedCardsMaskINTx() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        // QEMU's am53c974 carries QEMU's default subsystem; its lsi53c895a carries LSI's own.
        try tree.add(.init(address: .bdf("0000:00:04.0"), vendor: 0x1022, device: 0x2020, subsystemVendor: 0x1af4,
            subsystemDevice: 0x1100, interruptPin: 1, irq: 16, driver: "am53c974", group: 11))
        try tree.add(.init(address: .bdf("0000:00:06.0"), vendor: 0x1000, device: 0x0012, subsystemVendor: 0x0000,
            subsystemDevice: 0x1000, interruptPin: 1, irq: 16, driver: "sym53c8xx", group: 12))
        let report = HostDoctor(roots: tree.roots, probePolicy: .never).run(
            devices: [.address(.bdf("0000:00:04.0")), .address(.bdf("0000:00:06.0"))], guestMemory: nil)
        #expect(report.device("0000:00:04.0")?.check("intx-masking")?.status == .pass)
        #expect(report.device("0000:00:04.0")?.check("intx-masking")?.detail.contains("subsystem 1af4:1100") == true)
        #expect(report.device("0000:00:06.0")?.check("intx-masking")?.detail.hasPrefix("unknown") == true)
    }

    @Test func deviceWithNoINTxPin() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        try tree.add(.init(address: .bdf("0000:00:02.0"), vendor: 0x1b36, device: 0x000d, classCode: 0x0c0330,
            capabilities: [0x11, 0x10], interruptPin: 0, irq: 0, driver: "vfio-pci", group: 9, resetMethod: "flr"))
        let report = doctor(tree).run(devices: [.address(.bdf("0000:00:02.0"))], guestMemory: nil)
        let device = try #require(report.device("0000:00:02.0"))
        #expect(device.check("intx-pin")?.status == .pass)
        #expect(device.check("intx-pin")?.detail.contains("no INTx pin") == true)
        #expect(device.check("irq-assigned")?.status == .skip)
        #expect(device.check("intx-masking")?.status == .skip)
        #expect(device.check("intx-shared")?.status == .skip)
        #expect(device.check("rom")?.status == .skip)
    }

    @Test func irqZeroIsNoSuchDevice() throws {
        let tree = try SysfsTreeBuilder.originalBench(cardSlot: 4, irq: 0)
        let report = doctor(tree).run(devices: [.address(.bdf("0000:03:04.0"))], guestMemory: nil)
        let irq = try #require(report.device("0000:03:04.0")?.check("irq-assigned"))
        #expect(irq.status == .fail)
        #expect(irq.detail.contains("ENODEV"))
        #expect(status(report, "0000:03:04.0", "intx-shared") == .skip)
    }

    @Test func missingDeviceFailsPresence() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        let report = doctor(tree).run(devices: [.address(.bdf("0000:05:00.0")), .ids(vendor: 0x1000, device: 0x0012)], guestMemory: nil)
        #expect(report.devices.map(\.address) == ["0000:05:00.0", "1000:0012"])
        #expect(report.devices.allSatisfy { $0.checks.count == 1 && $0.checks[0].id == "device-present" && $0.checks[0].status == .fail })
        #expect(!report.ok)
    }

    @Test func jsonHasTheDocumentedShape() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        let report = doctor(tree).run(devices: [.address(.bdf("0000:03:04.0"))], guestMemory: 512 << 20)
        let json = try JSONValue.parse(report.json.jsonString())
        #expect(json["ok"] == .bool(false))
        #expect(json["host"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == ["iommu-enabled", "vfio-module", "vfio-nodes", "memlock"])
        let device = try #require(json["devices"]?[0])
        #expect(device["address"] == "0000:03:04.0")
        let ids = device["checks"]?.arrayValue?.compactMap { $0["id"]?.stringValue }
        #expect(ids == ["device-present", "iommu-group", "group-viable", "driver-bound", "vfio-nodes", "intx-pin",
            "irq-assigned", "intx-masking", "intx-shared", "reset", "rom"])
        for check in device["checks"]?.arrayValue ?? [] {
            #expect(check.objectValue?.keys == ["id", "status", "detail", "hint"])
            #expect(["pass", "warn", "fail", "skip"].contains(check["status"]?.stringValue ?? ""))
        }
    }

    @Test func neverWritesToATreeGivenWithSysfs() throws {
        let tree = try SysfsTreeBuilder.originalBench(cardSlot: 5, irq: 17, cardDriver: nil)
        // An unknown, idle, unbound card: exactly what the live probe would test.
        try tree.add(.init(address: .bdf("0000:03:06.0"), vendor: 0x10b7, device: 0x9050, interruptPin: 1, irq: 17, group: 7),
            parent: SysfsTreeBuilder.pericom)
        let before = tree.readBytes("sys/" + tree.devicePaths[.bdf("0000:03:06.0")]! + "/config")
        let writer = SysfsWriter()
        let report = doctor(tree, writer: writer).run(devices: [.address(.bdf("0000:03:06.0"))], guestMemory: nil)
        #expect(writer.log.isEmpty)
        #expect(tree.readBytes("sys/" + tree.devicePaths[.bdf("0000:03:06.0")]! + "/config") == before)
        #expect(report.device("0000:03:06.0")?.check("intx-masking")?.detail.hasPrefix("unknown") == true)
        // The same card on the live roots would be probed (root, idle, unbound); not in use, not a bridge.
        var live = doctor(tree)
        live.roots = .live
        let card = try #require(Sysfs(roots: tree.roots).device(.bdf("0000:03:06.0")))
        #expect(live.probeAllowed(card))
        var bound = card
        bound.driver = "3c59x"
        #expect(!live.probeAllowed(bound), "never probe a card a host driver is using")
        var busy = card
        busy.driver = "vfio-pci"
        busy.enableCount = 1
        #expect(!live.probeAllowed(busy), "never probe a card QEMU has open")
        live.effectiveUserID = 1000
        #expect(!live.probeAllowed(card))
    }

    @Test func probeTogglesBitTenReadsBackAndRestores() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        let config = tree.path("sys/bus/pci/devices/0000:03:04.0/config")
        let original = try #require(tree.readBytes("sys/bus/pci/devices/0000:03:04.0/config"))
        // A PCI 2.3 card: the bit follows the write.
        let writer = SysfsWriter()
        #expect(INTxMaskProbe.run(configPath: config, writer: writer) == true)
        #expect(writer.log.count == 2)
        #expect(writer.log.map(\.offset) == [4, 4])
        #expect(writer.log[0].bytes == [original[4], original[5] ^ 0x04])
        #expect(writer.log[1].bytes == [original[4], original[5]])
        #expect(tree.readBytes("sys/bus/pci/devices/0000:03:04.0/config") == original)
        // A pre-2.3 card: bit 10 is reserved and reads back unchanged.
        let legacy = SysfsWriter()
        legacy.kernel = { write in
            if write.offset == 4 { try tree.write("sys/bus/pci/devices/0000:03:04.0/config", bytes: original) }
        }
        #expect(INTxMaskProbe.run(configPath: config, writer: legacy) == false)
        #expect(legacy.log.count == 2)
        #expect(tree.readBytes("sys/bus/pci/devices/0000:03:04.0/config") == original)
    }

    @Test func preflightAndSetupPlan() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        let report = HostDoctor.preflight(devices: [DeviceSelector("9004:5078")!], guestMemory: 64 << 20, roots: tree.roots)
        #expect(!report.ok)
        #expect(report.failures.contains { $0.device == "0000:03:04.0" && $0.check.id == "intx-shared" })
        #expect(report.text(onlyProblems: true).contains("FAIL  intx-shared"))
        #expect(!report.text(onlyProblems: true).contains("PASS"))

        try tree.setCommandLine("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro iommu=pt")
        let card = try #require(Sysfs(roots: tree.roots).device(.bdf("0000:03:04.0")))
        let plan = SetupPlan(roots: tree.roots, devices: [card])
        #expect(plan.kernelOptions == ["intel_iommu=on"])
        #expect(plan.presentOptions == ["iommu=pt"])
        let modprobe = try #require(plan.files.first { $0.path == "/etc/modprobe.d/vfio.conf" })
        #expect(modprobe.contents.contains("options vfio-pci ids=9004:5078\n"))
        #expect(modprobe.contents.contains("softdep aic7xxx pre: vfio-pci\n"))
        #expect(plan.files.contains { $0.path == "/etc/modules-load.d/vfio.conf" && $0.contents.contains("vfio_pci") })
        #expect(plan.commands.contains { $0.hasPrefix("update-grub") })
        #expect(plan.commands.contains { $0.hasPrefix("update-initramfs -u") })
        #expect(plan.text.contains("intel_iommu=on"))
        // softdep names the module a bound driver lives in (ehci-pci is module ehci_pci).
        let ehci = try #require(Sysfs(roots: tree.roots).device(SysfsTreeBuilder.ehci))
        let ehciPlan = SetupPlan(roots: tree.roots, devices: [ehci])
        #expect(ehciPlan.files[0].contents.contains("softdep ehci_pci pre: vfio-pci\n"))
        // A card already on vfio-pci gets the softdep qlab knows for it.
        let (vfioTree, _) = (try SysfsTreeBuilder.originalBench(cardSlot: 5, irq: 17, cardDriver: "vfio-pci"), ())
        let bound = try #require(Sysfs(roots: vfioTree.roots).device(.bdf("0000:03:05.0")))
        #expect(SetupPlan(roots: vfioTree.roots, devices: [bound]).files[0].contents.contains("softdep aic7xxx pre: vfio-pci\n"))
    }

    @Test func devicesTableVerdicts() throws {
        let tree = try SysfsTreeBuilder.originalBench(cardSlot: 5, irq: 17, cardDriver: "vfio-pci")
        try tree.add(.init(address: .bdf("0000:00:02.0"), vendor: 0x8086, device: 0x10d3, classCode: 0x020000,
            capabilities: [0x10], interruptPin: 1, irq: 16, driver: "e1000e", group: 9, resetMethod: "flr"))
        let rows = DeviceSummary.all(roots: tree.roots)
        func row(_ bdf: String) -> DeviceSummary? { rows.first { $0.address == .bdf(bdf) } }
        #expect(row("0000:03:05.0")?.verdict == .ready)
        #expect(row("0000:03:05.0")?.intxMasking == .no)
        #expect(row("0000:03:05.0")?.name?.contains("AIC-7850") == true)
        #expect(row("0000:02:00.0")?.verdict == .bridge)
        #expect(row("0000:02:00.0")?.blockers == [])
        #expect(row("0000:00:00.0")?.verdict == .bridge, "a host bridge is never passed through")
        #expect(row("0000:00:02.0")?.verdict == .bindable)
        #expect(row("0000:00:02.0")?.intxMasking == .yes)
        #expect(row("0000:00:1d.0")?.verdict == .bindable)
        let table = DeviceSummary.table(rows)
        #expect(table.hasPrefix("ADDRESS"))
        #expect(table.contains("9004:5078"))
    }
}

@Suite struct HostDoctorLabTests {
    @Test func labPassthroughDevicesAndMemory() throws {
        let tree = try SysfsTreeBuilder.originalBench(cardSlot: 5, irq: 17, cardDriver: "vfio-pci")
        try tree.setMemlock(nil)
        try tree.write("rom-card.yaml", """
            name: romcard
            machine: {type: q35, memory: 512M}
            devices:
              scsi0:
                passthrough: {host: "0000:03:05.0", rombar: false}
              scsi1:
                passthrough: {ids: "1000:0012"}
            guests:
              linux: {os: linux, kernel: /nonexistent/vmlinuz}
            """)
        let lab = try Lab.load(path: tree.path("rom-card.yaml"))
        var doctor = HostDoctor(roots: tree.roots, probePolicy: .never)
        doctor.effectiveUserID = 0
        #expect(doctor.selectors(for: lab) == [.address(.bdf("0000:03:05.0")), .ids(vendor: 0x1000, device: 0x0012)])
        #expect(HostDoctor.guestMemory(for: lab) == 512 << 20)
        let report = doctor.run(lab: lab)
        #expect(report.device("0000:03:05.0")?.check("rom")?.status == .pass)
        #expect(report.device("0000:03:05.0")?.check("rom")?.detail.contains("rombar=0") == true)
        #expect(report.device("1000:0012")?.check("device-present")?.status == .fail)
        #expect(report.hostCheck("memlock")?.detail.contains("512 MiB") == true)
        // Once a 53c895a is on the host, ids: picks the first in address order.
        try tree.add(.init(address: .bdf("0000:03:07.0"), vendor: 0x1000, device: 0x0012, interruptPin: 1, irq: 19,
            driver: "vfio-pci", group: 7), parent: SysfsTreeBuilder.pericom)
        try tree.add(.init(address: .bdf("0000:03:06.0"), vendor: 0x1000, device: 0x0012, interruptPin: 1, irq: 18,
            driver: "vfio-pci", group: 7), parent: SysfsTreeBuilder.pericom)
        #expect(doctor.selectors(for: lab).last == .address(.bdf("0000:03:06.0")))
        #expect(HostDoctor.preflight(lab: lab, roots: tree.roots).ok)
    }

    @Test func labWithoutPassthroughNeedsNoVFIO() throws {
        // A host with no IOMMU and no vfio: the host checks would fail for a passthrough lab.
        let tree = try SysfsTreeBuilder.originalBench()
        try tree.write("emulated.yaml", """
            name: emulated
            machine: {type: q35, memory: 512M}
            devices:
              scsi-lsi:
                emulated: {driver: lsi53c895a}
            guests:
              linux: {os: linux, kernel: /nonexistent/vmlinuz}
            """)
        let lab = try Lab.load(path: tree.path("emulated.yaml"))
        let doctor = HostDoctor(roots: tree.roots, probePolicy: .never)
        let report = doctor.run(lab: lab)
        #expect(report.ok)
        #expect(report.devices.isEmpty)
        #expect(report.host.map(\.id) == ["iommu-enabled", "vfio-module", "vfio-nodes", "memlock"])
        #expect(report.host.allSatisfy { $0.status == .skip && $0.detail.hasPrefix("not needed") })
        // The same host with a device to check still runs the vfio checks.
        let withDevice = doctor.run(lab: lab, extraDevices: [.address(.bdf("0000:03:04.0"))])
        #expect(withDevice.hostCheck("iommu-enabled")?.status != .skip)
    }
}
