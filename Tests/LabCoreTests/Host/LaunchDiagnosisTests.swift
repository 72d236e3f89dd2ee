import LabCore
import Testing

/// A launch that fails with the INTx EBUSY text gets the host's own facts:
/// which handler holds the line and which bridge slots reach another one.
@Suite("Launch diagnosis with host facts")
struct LaunchDiagnosisTests {
    static let qemuText = "qemu-system-x86_64: -device vfio-pci,host=0000:03:04.0,id=scsi0: vfio 0000:03:04.0: Failed to set up TRIGGER eventfd signaling for interrupt INTX-0: VFIO_DEVICE_SET_IRQS failure: Device or resource busy"

    @Test func sharedLineAddsTheHandlersAndOtherSlots() throws {
        let tree = try SysfsTreeBuilder.originalBench(cardSlot: 4, irq: 16)
        let controller = LabController(supervisorExecutable: "qlab", hostRoots: tree.roots)
        let diagnoses = controller.withHostFacts(Diagnoser.diagnose(Self.qemuText))
        let busy = try #require(diagnoses.first { $0.id == "vfio-intx-busy" })
        #expect(busy.fix.contains("On this host:"))
        #expect(busy.fix.contains("ehci_hcd"))
    }

    @Test func freeLineAddsNothing() throws {
        let tree = try SysfsTreeBuilder.originalBench(cardSlot: 4, irq: 17)
        let controller = LabController(supervisorExecutable: "qlab", hostRoots: tree.roots)
        let plain = Diagnoser.diagnose(Self.qemuText)
        #expect(controller.withHostFacts(plain).map(\.fix) == plain.map(\.fix))
    }
}
