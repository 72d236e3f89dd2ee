import Testing
import QMP
@testable import LabCore
import Platform

@Suite struct VFIOBindTests {
    /// The bench with a second card (LSI 53c895a, sym53c8xx) in the same IOMMU group as the AIC-7850.
    func benchWithTwoCards() throws -> SysfsTreeBuilder {
        let tree = try SysfsTreeBuilder.originalBench(cardSlot: 5, irq: 17)
        try tree.add(.init(address: .bdf("0000:03:06.0"), vendor: 0x1000, device: 0x0012, interruptPin: 1, irq: 18,
            driver: "sym53c8xx", group: 7), parent: SysfsTreeBuilder.pericom)
        return tree
    }

    func binder(_ tree: SysfsTreeBuilder, dryRun: Bool = false) -> (VFIOBinder, SysfsWriter) {
        let writer = SysfsWriter(dryRun: dryRun)
        writer.kernel = tree.kernel
        let store = VFIOBindingStore(path: tree.path("state/qlab/vfio-bindings.json"))
        return (VFIOBinder(roots: tree.roots, writer: writer, store: store), writer)
    }

    func relative(_ tree: SysfsTreeBuilder, _ writes: [SysfsWriter.Write]) -> [String] {
        writes.map { String($0.path.dropFirst(tree.path("").count)) + " <- " + $0.text.debugDescription }
    }

    @Test func bindMovesTheGroupAndUnbindRestoresIt() throws {
        let tree = try benchWithTwoCards()
        let (binder, writer) = binder(tree)
        let steps = try binder.bind(.bdf("0000:03:05.0"))
        #expect(steps.map(\.address) == [.bdf("0000:03:05.0"), .bdf("0000:03:06.0")])
        #expect(relative(tree, writer.log) == [
            "sys/bus/pci/devices/0000:03:05.0/driver_override <- \"vfio-pci\"",
            "sys/bus/pci/devices/0000:03:05.0/driver/unbind <- \"0000:03:05.0\"",
            "sys/bus/pci/drivers_probe <- \"0000:03:05.0\"",
            "sys/bus/pci/devices/0000:03:06.0/driver_override <- \"vfio-pci\"",
            "sys/bus/pci/devices/0000:03:06.0/driver/unbind <- \"0000:03:06.0\"",
            "sys/bus/pci/drivers_probe <- \"0000:03:06.0\"",
        ])
        #expect(!writer.log.contains { $0.path.contains("0000:02:00.0") }, "the bridge is left alone")
        #expect(tree.driver(.bdf("0000:03:05.0")) == "vfio-pci")
        #expect(tree.driver(.bdf("0000:03:06.0")) == "vfio-pci")
        #expect(tree.driver(SysfsTreeBuilder.pericom) == nil)
        #expect(tree.exists("dev/vfio/7"))

        let state = try JSONValue.parse(#require(tree.read("state/qlab/vfio-bindings.json")))
        let recorded = state["bindings"]?.arrayValue ?? []
        #expect(recorded.map { $0["address"]?.stringValue } == ["0000:03:05.0", "0000:03:06.0"])
        #expect(recorded.map { $0["previousDriver"]?.stringValue } == ["aic7xxx", "sym53c8xx"])
        #expect(recorded.allSatisfy { $0["sysfs"]?.stringValue == tree.roots.sysfs && $0["group"] == 7 })

        // With the group on vfio-pci the doctor agrees.
        let report = HostDoctor(roots: tree.roots, probePolicy: .never).run(devices: [.address(.bdf("0000:03:05.0"))], guestMemory: nil)
        #expect(report.device("0000:03:05.0")?.check("driver-bound")?.status == .pass)
        #expect(report.device("0000:03:05.0")?.check("group-viable")?.status == .pass)

        // Binding again has nothing to do and writes nothing.
        let (again, againWriter) = self.binder(tree)
        #expect(try again.bind(.bdf("0000:03:05.0")).isEmpty)
        #expect(againWriter.log.isEmpty)

        let (restorer, restoreWriter) = self.binder(tree)
        let restored = try restorer.unbind(.bdf("0000:03:05.0"))
        #expect(restored.map(\.summary) == ["vfio-pci → aic7xxx", "vfio-pci → sym53c8xx"])
        #expect(relative(tree, restoreWriter.log) == [
            "sys/bus/pci/devices/0000:03:05.0/driver/unbind <- \"0000:03:05.0\"",
            "sys/bus/pci/devices/0000:03:05.0/driver_override <- \"\\n\"",
            "sys/bus/pci/drivers/aic7xxx/bind <- \"0000:03:05.0\"",
            "sys/bus/pci/devices/0000:03:06.0/driver/unbind <- \"0000:03:06.0\"",
            "sys/bus/pci/devices/0000:03:06.0/driver_override <- \"\\n\"",
            "sys/bus/pci/drivers/sym53c8xx/bind <- \"0000:03:06.0\"",
        ])
        #expect(tree.driver(.bdf("0000:03:05.0")) == "aic7xxx")
        #expect(tree.driver(.bdf("0000:03:06.0")) == "sym53c8xx")
        #expect(tree.driverOverride(.bdf("0000:03:05.0")) == "(null)\n")
        let after = try JSONValue.parse(#require(tree.read("state/qlab/vfio-bindings.json")))
        #expect(after["bindings"]?.arrayValue?.isEmpty == true)
    }

    @Test func dryRunPrintsEveryWriteAndChangesNothing() throws {
        let tree = try benchWithTwoCards()
        let (binder, writer) = binder(tree, dryRun: true)
        var printed: [String] = []
        writer.onWrite = { printed.append($0.description) }
        try binder.bind(.bdf("0000:03:05.0"))
        #expect(printed.count == 6)
        #expect(printed.first == "echo 'vfio-pci' > \(tree.path("sys/bus/pci/devices/0000:03:05.0/driver_override"))")
        #expect(tree.driver(.bdf("0000:03:05.0")) == "aic7xxx")
        #expect(tree.driverOverride(.bdf("0000:03:05.0")) == "(null)\n")
        #expect(tree.read("sys/bus/pci/drivers_probe") == "")
        #expect(!tree.exists("state/qlab/vfio-bindings.json"))
    }

    @Test func unboundMembersAndPciStubAreLeftAlone() throws {
        let tree = try SysfsTreeBuilder.originalBench(cardSlot: 5, irq: 17, cardDriver: nil)
        try tree.add(.init(address: .bdf("0000:03:06.0"), vendor: 0x1000, device: 0x0012, interruptPin: 1, irq: 18,
            driver: "pci-stub", group: 7), parent: SysfsTreeBuilder.pericom)
        let (binder, writer) = binder(tree)
        try binder.bind(.bdf("0000:03:05.0"))
        #expect(relative(tree, writer.log) == [
            "sys/bus/pci/devices/0000:03:05.0/driver_override <- \"vfio-pci\"",
            "sys/bus/pci/drivers_probe <- \"0000:03:05.0\"",
        ])
        #expect(tree.driver(.bdf("0000:03:06.0")) == "pci-stub")
        // The card had no driver: unbind gives it none.
        let (restorer, restoreWriter) = self.binder(tree)
        try restorer.unbind(.bdf("0000:03:05.0"))
        #expect(relative(tree, restoreWriter.log) == [
            "sys/bus/pci/devices/0000:03:05.0/driver/unbind <- \"0000:03:05.0\"",
            "sys/bus/pci/devices/0000:03:05.0/driver_override <- \"\\n\"",
        ])
        #expect(tree.driver(.bdf("0000:03:05.0")) == nil)
    }

    @Test func refusesADeviceHoldingAMountedFilesystem() throws {
        let tree = try benchWithTwoCards()
        try tree.addDisk("sda", partitions: 2, below: .bdf("0000:03:06.0"))
        try tree.setMounts(["/dev/sda2 /srv/scratch ext4 rw,relatime 0 0"])
        let (binder, writer) = binder(tree)
        let error = #expect(throws: VFIOBinder.BindError.self) { try binder.bind(.bdf("0000:03:05.0")) }
        #expect(error?.description.contains("0000:03:06.0: /dev/sda2 (block device sda2) is mounted on /srv/scratch") == true)
        #expect(error?.description.contains("--force") == true)
        #expect(writer.log.isEmpty)
        #expect(!tree.exists("state/qlab/vfio-bindings.json"))
        // A disk that is not mounted does not stop it; --force overrides a mounted one.
        let (forced, forcedWriter) = self.binder(tree)
        try forced.bind(.bdf("0000:03:05.0"), force: true)
        #expect(forcedWriter.log.count == 6)
    }

    @Test func refusesTheDefaultRouteInterfaceAndTheConsole() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        try tree.add(.init(address: .bdf("0000:00:03.0"), vendor: 0x8086, device: 0x10d3, classCode: 0x020000,
            capabilities: [0x10], interruptPin: 1, irq: 20, driver: "e1000e", group: 12))
        try tree.addNetworkInterface("enp0s3", below: .bdf("0000:00:03.0"), defaultRoute: false)
        let (binder, _) = binder(tree, dryRun: true)
        _ = try binder.bind(.bdf("0000:00:03.0"))  // not the default route: fine

        try tree.addNetworkInterface("enp0s3", below: .bdf("0000:00:03.0"), defaultRoute: true)
        let error = #expect(throws: VFIOBinder.BindError.self) { try binder.bind(.bdf("0000:00:03.0")) }
        #expect(error?.description.contains("network interface enp0s3 carries the default route") == true)

        try tree.add(.init(address: .bdf("0000:00:01.0"), vendor: 0x1234, device: 0x1111, classCode: 0x030000,
            interruptPin: 0, driver: "bochs-drm", group: 13, bootVGA: true))
        try tree.write("sys/class/tty/console/active", "tty0 ttyS0\n")
        let vga = #expect(throws: VFIOBinder.BindError.self) { try binder.bind(.bdf("0000:00:01.0")) }
        #expect(vga?.description.contains("console tty0 is shown on this display device") == true)
    }

    @Test func refusesABridgeAndAMissingIOMMUGroup() throws {
        let tree = try SysfsTreeBuilder.originalBench()
        let (binder, writer) = binder(tree)
        #expect(throws: VFIOBinder.BindError.self) { try binder.bind(SysfsTreeBuilder.pericom) }
        #expect(throws: VFIOBinder.BindError.self) { try binder.bind(.bdf("0000:07:00.0")) }
        try tree.add(.init(address: .bdf("0000:00:05.0"), vendor: 0x9004, device: 0x5078, interruptPin: 1, irq: 11, driver: "aic7xxx"))
        let error = #expect(throws: VFIOBinder.BindError.self) { try binder.bind(.bdf("0000:00:05.0")) }
        #expect(error?.description.contains("no IOMMU group") == true)
        #expect(writer.log.isEmpty)
    }

    @Test func stateFileErrorsNameTheFile() throws {
        let tree = try SysfsTreeBuilder()
        let store = VFIOBindingStore(path: tree.path("state/vfio-bindings.json"))
        #expect(try store.load().isEmpty)
        let binding = VFIOBindingStore.Binding(address: .bdf("0000:03:04.0"), sysfs: "/sys", group: 7,
            previousDriver: "aic7xxx", previousOverride: nil)
        try store.save([binding])
        #expect(try store.load() == [binding])
        #expect(!(HostFiles.list(tree.path("state")) ?? []).contains { $0.contains(".tmp") })
        try tree.write("state/vfio-bindings.json", "{\"bindings\": [\n{\"address\": 7}]}")
        let error = #expect(throws: VFIOBindingStore.StoreError.self) { try store.load() }
        #expect(error?.description.contains(tree.path("state/vfio-bindings.json")) == true)
        #expect(error?.description.contains("bindings[0]") == true)
        #expect(VFIOBindingStore.defaultPath(environment: ["QLAB_STATE_DIR": "/x"]) == "/x/vfio-bindings.json")
        #expect(VFIOBindingStore.defaultPath(environment: ["XDG_STATE_HOME": "/s", "HOME": "/h"]) == "/s/qlab/vfio-bindings.json")
        #expect(VFIOBindingStore.defaultPath(environment: ["HOME": "/h"]) == "/h/.local/state/qlab/vfio-bindings.json")
    }
}
