import Foundation
import LabCore
import QMP
import Testing

/// attach/detach/reset against real QEMU 7.2 (TCG). The lab with no OS shows
/// what happens when no guest answers the unplug; the test guest shows the
/// ACPI handshake completing it.
@Suite("Hotplug and unplug (real QEMU)", .serialized)
struct HotplugTests {
    @Test func pausedVMUnplugNeedsAResetAndTheIdCanBeReused() async throws {
        let fixture = try DeviceLabFixture()
        let lab = try fixture.bareLab()
        let targetDigest = try DeviceLabFixture.digest(DeviceLabFixture.scsiTarget)
        do {
            try await fixture.withLab(lab, paused: true) { session in
                let attached = try await session.attach("scsi-am")
                #expect(attached.driver == "am53c974")
                #expect(attached.placement.bus == DevicePlacement.bridgeID)
                #expect(attached.deviceIDs == ["scsi-am", "scsi-am-disk0"])
                // No firmware has run: query-pci does not see behind the bridge yet; QOM does.
                #expect(try await session.pciIDs().contains("scsi-am"))
                let overlay = try #require(attached.overlays["scsi-am-disk0"])
                #expect(overlay.hasPrefix(fixture.stateRoot + "/bare-dev/"))
                let info = try DeviceLabFixture.run(["qemu-img", "info", "-U", overlay])
                #expect(info.output.contains("backing file: \(DeviceLabFixture.scsiTarget)"), "\(info.output)")
                #expect(try await session.blockNodeNames().isSuperset(of: ["scsi-am-disk0-fmt", "scsi-am-disk0-file"]))
                #expect(session.currentDeviceState("scsi-am") == .hotplug)

                await #expect(throws: DeviceError.self) { try await session.attach("scsi-am") }
                do {
                    _ = try await session.attach("scsi-nope")
                    Issue.record("attach of an unknown device succeeded")
                } catch DeviceError.unknownDevice(_, _, let available) {
                    #expect(available == ["scsi-am"])
                }

                // Nothing runs in a prelaunch VM: the guest cannot answer.
                do {
                    _ = try await session.detach("scsi-am", policy: .guestOnly(timeout: .seconds(1)))
                    Issue.record("a paused VM completed an unplug without a reset")
                } catch DeviceError.guestCannotUnplug(_, let status, _) {
                    #expect(status == "prelaunch")
                }
                #expect(try await session.pciIDs().contains("scsi-am"))

                let detached = try await session.detach("scsi-am")
                #expect(detached.method == .resetVMNotRunning)
                #expect(detached.timings.steps.contains { $0.name == "system_reset" })
                #expect(try await !session.pciIDs().contains("scsi-am"))
                #expect(try await session.blockNodeNames().isDisjoint(with: ["scsi-am-disk0-fmt", "scsi-am-disk0-file"]))
                #expect(!FileManager.default.fileExists(atPath: overlay))
                #expect(session.currentDeviceState("scsi-am") == .detached)
                await #expect(throws: DeviceError.self) { try await session.detach("scsi-am") }

                // The same id again, on a fresh overlay.
                let again = try await session.attach("scsi-am")
                #expect(try await session.pciIDs().contains("scsi-am"))
                #expect(again.overlays["scsi-am-disk0"] == overlay)
                #expect(FileManager.default.fileExists(atPath: overlay))

                // An unplug left pending (device_del with no guest) is completed by a reset.
                try await session.qmp.deviceDel(id: "scsi-am")
                #expect(try await session.pciIDs().contains("scsi-am"))
                let reset = try await session.reset()
                #expect(reset.completedUnplugs == ["scsi-am"])
                #expect(try await !session.pciIDs().contains("scsi-am"))
                #expect(session.currentDeviceState("scsi-am") == .detached)
                #expect(try await session.blockNodeNames().isDisjoint(with: ["scsi-am-disk0-fmt"]))

                // Nodes left behind by an interrupted detach do not block the next attach.
                _ = try await session.qmp.execute(
                    "blockdev-add", arguments: ["driver": "file", "node-name": "scsi-am-disk0-file", "filename": .string(DeviceLabFixture.scsiTarget), "read-only": true])
                let afterLeftovers = try await session.attach("scsi-am")
                #expect(afterLeftovers.deviceIDs == ["scsi-am", "scsi-am-disk0"])
                #expect(try await session.pciIDs().contains("scsi-am"))
            }
        } catch {
            fixture.cleanUp()
            throw error
        }
        fixture.cleanUp()
        #expect(try DeviceLabFixture.digest(DeviceLabFixture.scsiTarget) == targetDigest, "the base image was written")
    }

    @Test func runningVMWithoutOSTimesOutThenResetCompletesTheUnplug() async throws {
        let fixture = try DeviceLabFixture()
        let lab = try fixture.bareLab()
        do {
            try await fixture.withLab(lab) { session in
                _ = try await session.attach("scsi-am")
                // No OS runs the ACPI eject: with no time given and no reset allowed, it stays pending.
                do {
                    _ = try await session.detach("scsi-am", policy: UnplugPolicy(guestTimeout: .zero, resetFallback: false))
                    Issue.record("the unplug completed with no guest")
                } catch DeviceError.unplugTimedOut(let device, _, _) {
                    #expect(device == "scsi-am")
                }
                #expect(session.currentDeviceState("scsi-am") == .hotplug, "not detached before QEMU confirms it")
                try await session.qmp.stop()
                let stillThere = try await session.pciIDs().contains("scsi-am")
                let reset = try await session.reset()
                if stillThere { #expect(reset.completedUnplugs == ["scsi-am"]) }
                #expect(try await !session.pciIDs().contains("scsi-am"))
                #expect(session.currentDeviceState("scsi-am") == .detached)

                // With the fallback: wait (here: not at all), then reset.
                try await session.qmp.cont()
                _ = try await session.attach("scsi-am")
                let detached = try await session.detach("scsi-am", policy: UnplugPolicy(guestTimeout: .zero))
                #expect(detached.method == .resetAfterTimeout)
                #expect(try await !session.pciIDs().contains("scsi-am"))
            }
        } catch {
            fixture.cleanUp()
            throw error
        }
        fixture.cleanUp()
    }

    @Test(.enabled(if: DeviceLabFixture.haveGuestImages, "images/build.sh has not built the test guest"))
    func realGuestReleasesTheCardAndSnapshotsKeepItOut() async throws {
        let fixture = try DeviceLabFixture()
        // QEMU's loadvm in place: the unplug/reset path (FastRevertTests has the fast method).
        let lab = try fixture.emulatedLab(revert: "loadvm")
        let targetDigest = try DeviceLabFixture.digest(DeviceLabFixture.scsiTarget)
        let diskDigest = try DeviceLabFixture.digest(DeviceLabFixture.imagesOut + "/linux/disk.qcow2")
        do {
            try await fixture.withLab(lab) { session in
                try await fixture.waitForConsole("emulated-scsi", guest: "linux", text: "qlab-guest-ready")
                let attached = try await session.attach("scsi-am")
                let pci = try await session.qmp.queryPCI()
                let card = try #require(pci.first { $0.qdevID == "scsi-am" }, "query-pci lists the card by the lab's device name")
                #expect(card.bus != 0, "behind the pcie-pci-bridge")
                #expect(card.slot == 1)
                let detached = try await session.detach("scsi-am", policy: .guestOnly(timeout: .seconds(60)))
                #expect(detached.method == .guest)
                #expect(detached.timings.steps.contains { $0.name == "DEVICE_DELETED scsi-am (guest)" })
                #expect(try await !session.pciIDs().contains("scsi-am"))
                #expect(!FileManager.default.fileExists(atPath: attached.overlays["scsi-am-disk0"] ?? "/"))

                // Reuse of the id, and both cards for the snapshot.
                _ = try await session.attach("scsi-am")
                _ = try await session.attach("scsi-lsi")
                let saved = try await session.saveSnapshot("ready", options: SnapshotOptions(unplugPolicy: .guestOnly(timeout: .seconds(60))))
                #expect(saved.via == "snapshot-save job")
                #expect(saved.detached.map(\.device) == ["scsi-am", "scsi-lsi"])
                #expect(saved.detached.allSatisfy { $0.method == .guest })
                #expect(saved.reattached.map(\.device) == ["scsi-am", "scsi-lsi"])
                #expect(try await session.pciIDs().isSuperset(of: ["scsi-am", "scsi-lsi"]))
                let list = try await session.listSnapshots()
                let ready = try #require(list.first { $0.tag == "ready" })
                #expect(ready.complete, "the hotplugged disks are not snapshot nodes")
                #expect(ready.nodes == [QEMUCommandLine.IDs.diskFormatNode])
                #expect(ready.vmStateSize > 0)
                #expect(ready.vmClock > .zero)

                let loaded = try await session.loadSnapshot("ready")
                #expect(loaded.detached.allSatisfy { $0.method == .resetRequested })
                #expect(loaded.reattached.map(\.device) == ["scsi-am", "scsi-lsi"])
                #expect(try await session.qmp.queryStatus().status == "running")

                let revert = try await session.revert(to: "ready")
                #expect(revert.attached.map(\.device) == ["scsi-am", "scsi-lsi"])
                #expect(revert.detached.map(\.device) == ["scsi-am", "scsi-lsi"])
                #expect(revert.timings.steps.contains { $0.name == "snapshot-load job" })
                #expect(revert.timings.steps.contains { $0.name == "attach scsi-lsi: device_add scsi-lsi" })
                // One reset completes both pending unplugs.
                #expect(revert.timings.steps.filter { $0.name.hasSuffix("system_reset") }.count == 1)
                #expect(try await session.pciIDs().isSuperset(of: ["scsi-am", "scsi-lsi"]))

                _ = try await session.deleteSnapshot("ready")
                #expect(try await session.listSnapshots().allSatisfy { $0.tag != "ready" })
            }
        } catch {
            fixture.cleanUp()
            throw error
        }
        fixture.cleanUp()
        #expect(try DeviceLabFixture.digest(DeviceLabFixture.scsiTarget) == targetDigest)
        #expect(try DeviceLabFixture.digest(DeviceLabFixture.imagesOut + "/linux/disk.qcow2") == diskDigest)
    }
}
