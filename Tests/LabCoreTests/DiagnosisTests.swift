import Foundation
import LabCore
import QMP
import Testing

/// The catalog against real texts: the wordings of QEMU's source across
/// versions (hw/vfio), the kernel's, and what QEMU 7.2 printed on this machine.
@Suite("Diagnosis catalog")
struct DiagnosisTests {
    struct Sample: CustomStringConvertible, Sendable {
        var text: String
        var id: String
        var device: String?
        var description: String { id + ": " + text }
    }

    static let samples: [Sample] = [
        // INTx TRIGGER EBUSY: QEMU 4.x+ (vfio_set_irq_signaling), 2.x (error_report), kernel genirq.
        Sample(
            text: "qemu-system-x86_64: -device vfio-pci,host=0000:03:05.0,id=scsi0: vfio 0000:03:05.0: Failed to set up TRIGGER eventfd signaling for interrupt INTX-0: VFIO_DEVICE_SET_IRQS failure: Device or resource busy",
            id: "vfio-intx-busy", device: "0000:03:05.0"),
        Sample(text: "qemu-system-x86_64: vfio: Error: Failed to setup INTx fd: Device or resource busy", id: "vfio-intx-busy", device: nil),
        Sample(text: "vfio: Error: Failed to setup INTx fd Device or resource busy", id: "vfio-intx-busy", device: nil),
        Sample(text: "[ 4242.123456] genirq: Flags mismatch irq 16. 00000000 (vfio-intx(0000:03:05.0)) vs. 00000080 (ahci[0000:00:1f.2])", id: "vfio-intx-busy", device: "0000:03:05.0"),
        Sample(
            text: "vfio 0000:04:00.0: Failed to set up TRIGGER eventfd signaling for interrupt INTX-0: VFIO_DEVICE_SET_IRQS failure: No such device",
            id: "vfio-intx-noirq", device: "0000:04:00.0"),
        Sample(text: "vfio: Error: Failed to setup INTx fd: No such device", id: "vfio-intx-noirq", device: nil),
        Sample(
            text: "vfio 0000:03:05.0: Failed to set up UNMASK eventfd signaling for interrupt INTX-0: VFIO_DEVICE_SET_IRQS failure: Invalid argument",
            id: "vfio-kvm-intx", device: "0000:03:05.0"),
        Sample(text: "vfio: Error: Failed to setup resample irqfd: Invalid argument", id: "vfio-kvm-intx", device: nil),
        Sample(
            text: "qemu-system-x86_64: -device vfio-pci,host=0000:03:05.0: vfio 0000:03:05.0: no iommu_group found: No such file or directory",
            id: "vfio-no-iommu-group", device: "0000:03:05.0"),
        Sample(text: "qemu-system-x86_64: -device vfio-pci,host=0000:03:05.0: vfio 0000:03:05.0: group 12 is not viable", id: "vfio-group-not-viable", device: "0000:03:05.0"),
        Sample(
            text: "vfio: error, group 12 is not viable, please ensure all devices within the iommu_group are bound to their vfio bus driver.",
            id: "vfio-group-not-viable", device: nil),
        Sample(text: "vfio 0000:03:05.0: failed to open /dev/vfio/12: Permission denied", id: "vfio-group-open", device: "0000:03:05.0"),
        Sample(text: "qemu-system-x86_64: -device vfio-pci,host=0000:03:05.0: Could not open '/dev/vfio/12': No such file or directory", id: "vfio-group-open", device: "0000:03:05.0"),
        Sample(text: "vfio: error opening /dev/vfio/12: No such file or directory", id: "vfio-group-open", device: nil),
        Sample(text: "vfio 0000:03:05.0: failed to open /dev/vfio/vfio: No such file or directory", id: "vfio-container", device: "0000:03:05.0"),
        Sample(text: "vfio: No available IOMMU models", id: "vfio-container", device: nil),
        Sample(text: "vfio: failed to set iommu for container: Invalid argument", id: "vfio-container", device: nil),
        Sample(
            text: "qemu-system-x86_64: -device vfio-pci,host=0000:03:05.0: vfio 0000:03:05.0: failed to setup container for group 12: failed to set iommu for container: Operation not permitted",
            id: "vfio-unsafe-interrupts", device: "0000:03:05.0"),
        Sample(
            text: "vfio_iommu_type1_attach_group: No interrupt remapping support.  Use the module param \"allow_unsafe_interrupts\" to enable VFIO IOMMU support on this platform",
            id: "vfio-unsafe-interrupts", device: nil),
        Sample(text: "vfio 0000:03:05.0: failed to setup container for group 12: Failed to set group container: Invalid argument", id: "vfio-container", device: "0000:03:05.0"),
        Sample(text: "vfio 0000:03:05.0: error getting device from group 12: Invalid argument", id: "vfio-device-get", device: "0000:03:05.0"),
        Sample(text: "vfio: error getting device 0000:03:05.0 from group 12: Device or resource busy", id: "vfio-device-get", device: "0000:03:05.0"),
        Sample(text: "Error: vfio 0000:41:00.0: device is already attached", id: "vfio-already-attached", device: "0000:41:00.0"),
        Sample(
            text: "qemu-system-x86_64: vfio_container_dma_map(0x55d5f1b0, 0x100000000, 0x40000000, 0x7f0000000000) = -12 (Cannot allocate memory)",
            id: "vfio-memlock", device: nil),
        Sample(text: "qemu-system-x86_64: VFIO_MAP_DMA failed: Cannot allocate memory", id: "vfio-memlock", device: nil),
        Sample(text: "vfio_dma_map(0x7f2a, 0xc0000, 0x7ff40000, 0x7f29bffc0000) = -12 (Cannot allocate memory)", id: "vfio-memlock", device: nil),
        Sample(text: "[  812.001] vfio_pin_pages_remote: RLIMIT_MEMLOCK (65536) exceeded", id: "vfio-memlock", device: nil),
        // QEMU 7.2's shape: the pinning failure inside the container setup is memlock, not the container.
        Sample(
            text: "qemu-system-x86_64: -device vfio-pci,host=0000:03:05.0,id=scsi0: vfio 0000:03:05.0: failed to setup container for group 12: memory listener initialization failed: Region pc.ram: vfio_dma_map(0x55ba53e7a9d0, 0x100000, 0x3ff00000, 0x7ed243e00000) = -12 (Cannot allocate memory)",
            id: "vfio-memlock", device: nil),
        Sample(
            text: "qemu-system-aarch64: -device vfio-pci,host=01:00.0: vfio 0000:01:00.0: failed to setup container for group 11: memory listener initialization failed: Region mach-virt.ram: vfio_dma_map(0x55de3c2a97f0, 0x40000000, 0x100000000, 0x7f8fcbe00000) = -22 (Invalid argument)",
            id: "vfio-container", device: "0000:01:00.0"),
        Sample(text: "qemu-system-x86_64: vfio-pci: Cannot read device rom at 0000:03:05.0", id: "vfio-rom", device: "0000:03:05.0"),
        Sample(text: "vfio: Error getting ROM info: Inappropriate ioctl for device", id: "vfio-rom", device: nil),
        Sample(text: "qemu-system-x86_64: vfio: Cannot reset device 0000:03:05.0, no available reset mechanism.", id: "vfio-reset", device: "0000:03:05.0"),
        Sample(text: "vfio: Cannot reset device 0000:03:05.0, depends on group 12 which is not owned.", id: "vfio-reset", device: "0000:03:05.0"),
        Sample(text: "vfio 0000:03:05.0: hot reset info failed: Operation not supported", id: "vfio-reset", device: "0000:03:05.0"),
        // Printed by QEMU 7.2 on this machine (see realQEMUErrorsAreDiagnosed for a live one).
        Sample(
            text: "qemu-system-x86_64: -device vfio-pci,host=0000:7f:1f.7,id=scsi0: vfio /sys/bus/pci/devices/0000:7f:1f.7: no such host device: No such file or directory",
            id: "vfio-no-host-device", device: "0000:7f:1f.7"),
        Sample(text: "Error: State blocked by non-migratable device '0000:00:05.0/vfio'", id: "migration-blocked", device: nil),
        Sample(text: "VFIO device doesn't support migration", id: "migration-blocked", device: nil),
        Sample(text: "qemu-system-x86_64: vfio 0000:03:05.0: VFIO migration is not supported in kernel", id: "migration-blocked", device: "0000:03:05.0"),
        Sample(text: "TASK ERROR: VM 100 qmp command 'savevm-start' failed - 0000:01:00.1: VFIO migration is not supported in kernel", id: "migration-blocked", device: "0000:01:00.1"),
        Sample(text: "Could not access KVM kernel module: No such file or directory", id: "kvm-unavailable", device: nil),
        Sample(text: "qemu-system-x86_64: -accel kvm: failed to initialize kvm: Permission denied", id: "kvm-unavailable", device: nil),
        Sample(text: "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69", id: "kvm-cpu-rejected", device: nil),
        Sample(text: "qemu-system-x86_64: -blockdev driver=qcow2,file=f,node-name=d: Failed to get \"write\" lock", id: "image-locked", device: nil),
        Sample(text: "device scsi-lsi: QEMU refused device_add lsi53c895a: failed to find romfile \"/tmp/qlab/card.rom\"", id: "romfile-missing", device: nil),
        Sample(text: "qemu-system-x86_64: -blockdev driver=file,filename=/nonexist.qcow2,node-name=f: Could not open '/nonexist.qcow2': No such file or directory", id: "image-missing", device: nil),
        Sample(text: "qemu-system-x86_64: -device nosuchdev,id=x: 'nosuchdev' is not a valid device model name", id: "device-unknown-driver", device: nil),
        Sample(text: "qemu-system-x86_64: -device lsi53c895a,id=x,bogus=1: Property 'lsi53c895a.bogus' not found", id: "device-bad-property", device: nil),
        Sample(text: "qemu-system-x86_64: -device lsi53c895a,id=a,bus=nobus: Bus 'nobus' not found", id: "bus-not-found", device: nil),
        Sample(text: "qemu-system-x86_64: -device lsi53c895a,id=b,bus=pcie.0,addr=0x5: PCI: slot 5 function 0 not available for lsi53c895a, in use by lsi53c895a,id=a", id: "pci-slot-in-use", device: nil),
        Sample(text: "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Bus 'pcie.0' does not support hotplugging\"}}", id: "bus-no-hotplug", device: nil),
        Sample(text: "qemu-system-x86_64: -device lsi53c895a,id=a: Duplicate ID 'a' for device", id: "duplicate-id", device: nil),
        Sample(text: "Device hp is already in the process of unplug", id: "unplug-pending", device: nil),
        Sample(text: "Error: Device 'vr' is writable but does not support snapshots", id: "snapshot-unsupported", device: nil),
        Sample(text: "Error: no block device can store vmstate for snapshot", id: "snapshot-no-disk", device: nil),
        Sample(text: "qemu-system-x86_64: -chardev socket,id=m,path=/tmp/xxxx: UNIX socket path '/tmp/xxxx' is too long", id: "socket-path-too-long", device: nil),
        Sample(text: "qemu-system-x86_64: -qmp tcp:127.0.0.1:4444,server=on: Failed to bind socket: Address already in use", id: "socket-in-use", device: nil),
        // qlab's own line for a QEMU with file-backed RAM that died of SIGBUS (RAMFiles.sigbusNote).
        Sample(
            text: "qlab: QEMU was killed by SIGBUS while its guest RAM was file-backed (/dev/shm/qlab-0/bare/live.ram; 0 MiB free now)",
            id: "ram-file-full", device: nil),
        // IOMMU faults: what L1's kernel (Debian 6.1) logged in the nested bench, a 5.x wording, AMD-Vi.
        Sample(
            text: "[  257.912541] DMAR: [DMA Read NO_PASID] Request device [01:00.0] fault addr 0xfe400000 [fault reason 0x06] PTE Read access is not set",
            id: "iommu-dma-fault", device: nil),
        Sample(
            text: "[ 1233.974499] DMAR: [DMA Write NO_PASID] Request device [01:00.0] fault addr 0xfe402000 [fault reason 0x05] PTE Write access is not set",
            id: "iommu-dma-fault", device: nil),
        Sample(text: "DMAR: [DMA Read] Request device [03:05.0] PASID ffffffff fault addr fe400000 [fault reason 06] PTE Read access is not set", id: "iommu-dma-fault", device: nil),
        Sample(
            text: "vfio-pci 0000:03:05.0: AMD-Vi: Event logged [IO_PAGE_FAULT domain=0x000e address=0xfe400000 flags=0x0000]",
            id: "iommu-dma-fault", device: "0000:03:05.0"),
        // QEMU's own crashes: what QEMU 7.2.22 and 10.0.2 printed on this machine, and what shells and qlab say of them.
        Sample(
            text: "qemu-system-x86_64: ../../migration/savevm.c:851: vmstate_register_with_alias_id: Assertion `!se->compat || se->instance_id == 0' failed.",
            id: "dc390-eeprom-replug", device: nil),
        Sample(
            text: "qemu-system-x86_64: migration/savevm.c:947: vmstate_register_with_alias_id: Assertion `!se->compat || se->instance_id == 0' failed.",
            id: "dc390-eeprom-replug", device: nil),
        Sample(
            text: "supervisor: QEMU refused loadvm s1: Unknown savevm section or instance '0000:00:05.0:01.0/eeprom' 0. Make sure that your current VM setup matches your saved VM setup, including any hotplugged devices",
            id: "dc390-eeprom-section", device: nil),
        Sample(text: "qemu-system-x86_64: ../../hw/core/qdev.c:312: qdev_set_parent_bus: Assertion `dev->realized' failed.", id: "qemu-assertion", device: nil),
        Sample(text: "Aborted (core dumped)", id: "qemu-aborted", device: nil),
        Sample(text: "bash: line 1: 81312 Aborted                 (core dumped) qemu-system-x86_64 -S", id: "qemu-aborted", device: nil),
        Sample(text: "QEMU killed by signal 6 (SIGABRT) during the test (QMP connection lost)", id: "qemu-aborted", device: nil),
    ]

    @Test(arguments: samples)
    func eachWordingIsRecognised(_ sample: Sample) {
        let diagnoses = Diagnoser.diagnose(sample.text)
        #expect(diagnoses.map(\.id) == [sample.id])
        #expect(diagnoses.first?.device == sample.device)
        #expect(diagnoses.first?.summary.isEmpty == false)
        #expect(diagnoses.first?.fix.isEmpty == false)
        #expect(diagnoses.first?.evidence == sample.text.trimmingCharacters(in: .whitespaces))
    }

    @Test func everyIssueIDIsInTheCatalog() {
        let required = [
            "vfio-intx-busy", "vfio-intx-noirq", "vfio-no-iommu-group", "vfio-group-not-viable", "vfio-group-open",
            "vfio-container", "vfio-device-get", "vfio-already-attached", "vfio-memlock", "vfio-rom", "vfio-reset",
            "vfio-no-host-device", "migration-blocked", "kvm-unavailable", "image-locked",
        ]
        let ids = DiagnosisCatalog.ids
        for id in required { #expect(ids.contains(id), "\(id)") }
        #expect(Set(ids).count == ids.count)
        // Every sample above is recognised by its own rule: each rule is exercised.
        #expect(Set(Self.samples.map(\.id)) == Set(ids))
    }

    @Test func anIOMMUFaultNamesTheAccessTheRequesterAndTheAddress() throws {
        let diagnosis = try #require(Diagnoser.diagnose("DMAR: [DMA Write NO_PASID] Request device [01:00.0] fault addr 0xfe402000 [fault reason 0x05] PTE Write access is not set").first)
        #expect(diagnosis.summary == "The IOMMU blocked a DMA write by device 01:00.0 at 0xfe402000: the address is not mapped for it")
        let amd = try #require(Diagnoser.diagnose("AMD-Vi: Event logged [IO_PAGE_FAULT device=0000:03:05.0 domain=0x000e address=0xfe400000 flags=0x0020]").first)
        #expect(amd.summary == "The IOMMU blocked a DMA by device 0000:03:05.0 at 0xfe400000: the address is not mapped for it")
        #expect(amd.device == "0000:03:05.0")
    }

    @Test func genirqNamesTheOtherDriverAndTheIRQ() throws {
        let text = """
            qemu-system-x86_64: -device vfio-pci,host=0000:03:05.0,id=scsi0,bus=qlab-pcibr0,addr=0x1: vfio 0000:03:05.0: Failed to set up TRIGGER eventfd signaling for interrupt INTX-0: VFIO_DEVICE_SET_IRQS failure: Device or resource busy
            [  123.456789] genirq: Flags mismatch irq 17. 00000000 (vfio-intx(0000:03:05.0)) vs. 00000080 (ehci_hcd:usb1)
            """
        let diagnoses = Diagnoser.diagnose(text)
        // One problem, one device: QEMU's line and the kernel's merge.
        #expect(diagnoses.count == 1)
        let d = try #require(diagnoses.first)
        #expect(d.id == "vfio-intx-busy")
        #expect(d.device == "0000:03:05.0")
        #expect(d.summary.contains("IRQ 17"))
        #expect(d.summary.contains("ehci_hcd:usb1"))
        #expect(d.fix.contains("ehci_hcd:usb1"))
        #expect(d.fix.contains("another slot"))
        #expect(d.evidence.hasPrefix("qemu-system-x86_64: -device vfio-pci"))

        // The other way round: vfio holds the line exclusively and a shared driver is refused.
        let reverse = Diagnoser.diagnose("genirq: Flags mismatch irq 22. 00000080 (snd_hda_intel:card0) vs. 00000000 (vfio-intx(0000:03:06.0))")
        #expect(reverse.map(\.id) == ["vfio-intx-busy"])
        #expect(reverse.first?.device == "0000:03:06.0")
        #expect(reverse.first?.summary.contains("snd_hda_intel:card0") == true)
    }

    @Test func orderDeduplicationAndUnrelatedText() {
        let text = """
            qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.vmx [bit 5]
            qemu-system-x86_64: vfio: Cannot reset device 0000:03:05.0, no available reset mechanism.
            qemu-system-x86_64: -device vfio-pci,host=0000:03:05.0: vfio 0000:03:05.0: group 7 is not viable
            Please ensure all devices within the iommu_group are bound to their vfio bus driver.
            qemu-system-x86_64: vfio: Cannot reset device 0000:03:05.0, no available reset mechanism.
            qemu-system-x86_64: vfio: Cannot reset device 0000:03:06.0, no available reset mechanism.
            """
        let diagnoses = Diagnoser.diagnose(text)
        #expect(diagnoses.map(\.id) == ["vfio-reset", "vfio-group-not-viable", "vfio-reset"])
        #expect(diagnoses.map(\.device) == ["0000:03:05.0", "0000:03:05.0", "0000:03:06.0"])
        #expect(diagnoses[1].summary.contains("group 7"))
        #expect(diagnoses[1].fix.contains("/sys/kernel/iommu_groups/7/devices"))
        #expect(Diagnoser.diagnose("all is well\nqemu-system-x86_64: terminating on signal 15").isEmpty)
        #expect(Diagnoser.diagnose("").isEmpty)
    }

    /// An assertion explains the abort that follows it: one diagnosis, the specific one.
    @Test func anAssertionSubsumesTheAbort() throws {
        let replug = Diagnoser.diagnose("""
            qemu-system-x86_64: migration/savevm.c:947: vmstate_register_with_alias_id: Assertion `!se->compat || se->instance_id == 0' failed.
            Aborted (core dumped)
            """)
        #expect(replug.map(\.id) == ["dc390-eeprom-replug"])
        let other = try #require(Diagnoser.diagnose("x.c:1: f: Assertion `a' failed.\nAborted").first)
        #expect(other.id == "qemu-assertion")
        #expect(other.summary.contains("in f (x.c:1): a"))
        // How QEMU ended counts even when it printed nothing; a requested quit says nothing.
        #expect(Diagnoser.diagnose(exit: .signaled(6), qemuOutput: "").map(\.id) == ["qemu-aborted"])
        #expect(Diagnoser.diagnose(exit: .signaled(6), qemuOutput: "qemu-system-x86_64: x.c:1: f: Assertion `a' failed.").map(\.id) == ["qemu-assertion"])
        #expect(Diagnoser.diagnose(exit: .exited(0), qemuOutput: "").isEmpty)
        #expect(Diagnoser.diagnose(exit: .signaled(9), qemuOutput: "").isEmpty)
        // "aborted" in other words is not an abort.
        #expect(Diagnoser.diagnose("migration aborted by the user").isEmpty)
        let tail = ExitRecord(exit: .signaled(6), at: 0, requested: false, qemuOutput: "a\n\nb\r\nc\n", diagnoses: []).qemuOutputTail(lines: 2)
        #expect(tail == ["b", "c"])
    }

    @Test func jsonShape() throws {
        let diagnoses = Diagnoser.diagnose("vfio 0000:03:05.0: group 12 is not viable\nCould not access KVM kernel module: No such file or directory")
        let json = Diagnosis.json(diagnoses)
        let list = try #require(json["diagnoses"]?.arrayValue)
        #expect(list.count == 2)
        #expect(list[0].objectValue?.keys == ["id", "device", "summary", "cause", "fix"])
        #expect(list[0]["device"] == "0000:03:05.0")
        #expect(list[1]["device"] == .null)
        // Through jansson and back.
        #expect(try JSONValue.parse(try json.jsonString()) == json)
    }

    /// Real QEMU 7.2 failures, diagnosed from its own stderr.
    @Test func realQEMUErrorsAreDiagnosed() throws {
        let dir = try LabTempDirectory("diag")
        defer { dir.remove() }
        let base = ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-S", "-nodefaults", "-display", "none"]
        // An address this machine lacks.
        let missing = try LabFixtures.run(base + ["-device", "vfio-pci,host=0000:7f:1f.7,id=scsi0"])
        #expect(missing.status != 0)
        let d = Diagnoser.diagnose(missing.output)
        #expect(d.map(\.id) == ["vfio-no-host-device"])
        #expect(d.first?.device == "0000:7f:1f.7")
        // A bad property and an unknown model.
        #expect(Diagnoser.diagnose(try LabFixtures.run(base + ["-device", "lsi53c895a,id=x,bogus=1"]).output).map(\.id) == ["device-bad-property"])
        #expect(Diagnoser.diagnose(try LabFixtures.run(base + ["-device", "nosuchdev"]).output).map(\.id) == ["device-unknown-driver"])
        // A missing image names the path.
        let image = try LabFixtures.run(base + ["-blockdev", "driver=file,filename=\(dir.path)/none.qcow2,node-name=f"])
        let imageDiagnoses = Diagnoser.diagnose(image.output)
        #expect(imageDiagnoses.map(\.id) == ["image-missing"])
        #expect(imageDiagnoses.first?.summary.contains("\(dir.path)/none.qcow2") == true)
    }
}
