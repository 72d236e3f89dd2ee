import Foundation
import LabCore
import QMP
import Testing

/// The revert cycle the test loop repeats, and attach failures, against real QEMU.
@Suite("Revert cycle and passthrough attach (real QEMU)", .serialized)
struct RevertCycleTests {
    static func fdCount(_ pid: Int32) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count
    }

    static func size(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? Int) ?? -1
    }

    @Test func tenRevertCyclesLeakNothing() async throws {
        let fixture = try DeviceLabFixture()
        // QEMU's loadvm in place (FastRevertTests has the fast method's cycles).
        let lab = try fixture.bareLab(extraTopLevel: "revert: loadvm")
        let guestOverlay = fixture.stateRoot + "/bare-dev/bare/disk.qcow2"
        let hotplugDirectory = fixture.stateRoot + "/bare-dev/bare/hotplug"
        do {
            try await fixture.withLab(lab, paused: true) { session in
                let pid = session.record.qemuPID
                _ = try await session.saveSnapshot("ready")
                let first = try await session.revert(to: "ready")
                #expect(first.detached.isEmpty)
                #expect(first.attached.map(\.device) == ["scsi-am"])
                #expect(first.via.hasPrefix("snapshot-load job"))
                let fds = Self.fdCount(pid)
                // QEMU names a hotplugged qcow2's backing node itself (#blockNNN), anew each time.
                let named = { (all: Set<String>) in all.filter { !$0.hasPrefix("#") } }
                let nodes = try await session.blockNodeNames()
                let overlaySize = Self.size(guestOverlay)
                for cycle in 2...10 {
                    let result = try await session.revert(to: "ready")
                    #expect(result.detached.map(\.device) == ["scsi-am"], "cycle \(cycle)")
                    #expect(result.detached.first?.method == .resetRequested)
                    #expect(result.attached.map(\.device) == ["scsi-am"])
                    #expect(result.total >= result.timings.total)
                }
                #expect(Self.fdCount(pid) == fds, "QEMU's open files grew over the cycles")
                let nodesAfter = try await session.blockNodeNames()
                #expect(named(nodesAfter) == named(nodes))
                #expect(nodesAfter.count == nodes.count)
                #expect(try await session.peripheralIDs().contains("scsi-am"))
                #expect(try FileManager.default.contentsOfDirectory(atPath: hotplugDirectory) == ["scsi-am-disk0.qcow2"])
                #expect(Self.size(guestOverlay) == overlaySize, "the guest overlay grew beyond the snapshot")
                #expect(try await session.listSnapshots().map(\.tag) == ["ready"])
                #expect(session.currentDeviceState("scsi-am") == .hotplug)
            }
        } catch {
            fixture.cleanUp()
            throw error
        }
        fixture.cleanUp()
    }

    @Test func revertToAMissingSnapshotFailsWithQEMUsWords() async throws {
        let fixture = try DeviceLabFixture()
        let lab = try fixture.bareLab(extraTopLevel: "revert: loadvm")
        do {
            // Running (firmware only): QEMU stops the VM for the load and leaves it stopped when the load fails.
            try await fixture.withLab(lab) { session in
                do {
                    _ = try await session.revert(to: "never-saved")
                    Issue.record("revert to a missing snapshot succeeded")
                } catch SnapshotError.failed(_, let tag, let text, let status, _) {
                    #expect(tag == "never-saved")
                    #expect(text.contains("does not exist"), "\(text)")
                    #expect(status == "restore-vm")
                }
                // The next good load resumes from restore-vm.
                _ = try await session.saveSnapshot("good")
                let loaded = try await session.loadSnapshot("good")
                #expect(loaded.via.contains("resumed from restore-vm"))
                #expect(try await session.qmp.queryStatus().status == "running")
            }
        } catch {
            fixture.cleanUp()
            throw error
        }
        fixture.cleanUp()
    }

    /// A card this machine does not have: QEMU's vfio-pci refuses the
    /// device_add; the error carries its words and the diagnosis, and
    /// nothing is left attached or recorded.
    @Test func passthroughAttachOfAMissingHostDeviceIsRefusedAndExplained() async throws {
        let fixture = try DeviceLabFixture()
        let disk = fixture.labDirectory + "/blank.qcow2"
        #expect(try DeviceLabFixture.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"]).status == 0)
        let lab = try fixture.writeLab("pt-dev", """
            name: pt-dev
            machine: {type: q35, accel: tcg, memory: 64M}
            devices:
              card:
                passthrough: {host: "0000:7e:1f.7", rombar: false}
                attach: hotplug
            guests:
              bare: {os: linux, disk: blank.qcow2}
            """)
        do {
            _ = try await fixture.controller.up(labFile: lab, options: LabController.UpOptions(force: true, paused: true))
            let session = try await LabSession.open(runtime: fixture.runtime("pt-dev"))
            defer { session.close() }
            do {
                _ = try await session.attach("card")
                Issue.record("vfio-pci attached a host device that does not exist")
            } catch DeviceError.qemuRefused(let device, let command, let message, let diagnoses) {
                #expect(device == "card")
                #expect(command == "device_add vfio-pci")
                #expect(message.contains("0000:7e:1f.7"), "\(message)")
                #expect(!diagnoses.isEmpty, "no diagnosis for: \(message)")
            }
            #expect(try await !session.peripheralIDs().contains("card"))
            #expect(session.currentDeviceState("card") == .detached)
        } catch {
            fixture.cleanUp()
            throw error
        }
        fixture.cleanUp()
    }
}
