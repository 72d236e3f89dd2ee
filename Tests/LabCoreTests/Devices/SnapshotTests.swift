import Foundation
import LabCore
import QMP
import Testing

/// Snapshots against real QEMU 7.2: a VM with no OS is enough to show what
/// is saved and restored (the disk's content, checked with qemu-io while
/// QEMU is down). Writing in a guest and reverting is the test loop's test.
@Suite("Snapshots (real QEMU)", .serialized)
struct SnapshotTests {
    /// `qemu-io -c COMMAND IMAGE` (QEMU must be down: it holds the image's lock).
    static func qemuIO(_ image: String, _ command: String) throws -> DeviceLabFixture.Run {
        try DeviceLabFixture.run(["qemu-io", "-f", "qcow2", "-c", command, image])
    }

    @Test func saveListLoadDeleteRestoresTheDisk() async throws {
        let fixture = try DeviceLabFixture()
        // RAM in qcow2 (loadvm): such snapshots load after a `down` (FastRevertTests has the fast method).
        let lab = try fixture.bareLab(extraTopLevel: "revert: loadvm")
        let overlay = fixture.stateRoot + "/bare-dev/bare/disk.qcow2"
        do {
            try await fixture.withLab(lab, paused: true) { session in
                #expect(try await session.listSnapshots().isEmpty)
                let saved = try await session.saveSnapshot("one")
                #expect(saved.via == "snapshot-save job")
                #expect(saved.detached.isEmpty)
                let list = try await session.listSnapshots()
                #expect(list.map(\.tag) == ["one"])
                #expect(list.first?.vmStateSize ?? 0 > 0)
                #expect(list.first?.complete == true)

                do {
                    _ = try await session.saveSnapshot("one")
                    Issue.record("saved over an existing tag without replace")
                } catch SnapshotError.alreadyExists(let tag, _) {
                    #expect(tag == "one")
                }
                let replaced = try await session.saveSnapshot("one", options: SnapshotOptions(replace: true))
                #expect(replaced.timings.steps.contains { $0.name == "delete old" })
                #expect(try await session.listSnapshots().map(\.tag) == ["one"])

                for bad in ["12", "a b", "x;quit", ""] {
                    await #expect(throws: SnapshotError.self, "tag \"\(bad)\"") { try await session.saveSnapshot(bad) }
                }
                do {
                    _ = try await session.loadSnapshot("nope")
                    Issue.record("loaded a snapshot that does not exist")
                } catch SnapshotError.notFound(_, let available, _) {
                    #expect(available == ["one"])
                }
                // Refused before QEMU was touched: not left in restore-vm.
                #expect(try await session.qmp.queryStatus().status == "prelaunch")
                await #expect(throws: SnapshotError.self) { try await session.deleteSnapshot("nope") }

                // HMP, as on QEMU before 6.0.
                let hmp = SnapshotOptions(backend: .hmp)
                #expect(try await session.saveSnapshot("two", options: hmp).via == "HMP savevm")
                #expect(try await session.listSnapshots().map(\.tag) == ["one", "two"])
                #expect(try await session.loadSnapshot("two", options: hmp).via == "HMP loadvm")
                #expect(try await session.deleteSnapshot("two", options: hmp).via == "HMP delvm")
                #expect(try await session.listSnapshots().map(\.tag) == ["one"])
            }

            // Scribble on the guest disk overlay while QEMU is down...
            let write = try Self.qemuIO(overlay, "write -P 0x5a 0 64k")
            #expect(write.status == 0, "\(write.output)")
            #expect(try Self.qemuIO(overlay, "read -P 0x5a 0 64k").output.contains("read 65536/65536"))

            // ...and loading the snapshot takes it back.
            try await fixture.withLab(lab, paused: true) { session in
                let loaded = try await session.loadSnapshot("one")
                #expect(loaded.via.hasPrefix("snapshot-load job"))
            }
            let zeros = try Self.qemuIO(overlay, "read -P 0 0 64k")
            #expect(zeros.output.contains("read 65536/65536"), "\(zeros.output)")
            #expect(try Self.qemuIO(overlay, "read -P 0x5a 0 64k").output.contains("Pattern verification failed"))
        } catch {
            fixture.cleanUp()
            throw error
        }
        fixture.cleanUp()
    }

    @Test func hotpluggedDisksStayOutOfSnapshotsAndComeBackFresh() async throws {
        let fixture = try DeviceLabFixture()
        let lab = try fixture.bareLab(extraTopLevel: "revert: loadvm")
        let overlay = fixture.stateRoot + "/bare-dev/bare/hotplug/scsi-am-disk0.qcow2"
        do {
            // In a VM with no OS only a reset completes an unplug, so allow it for the save.
            let options = SnapshotOptions(unplugPolicy: .standard)
            try await fixture.withLab(lab, paused: true) { session in
                _ = try await session.attach("scsi-am")
                let saved = try await session.saveSnapshot("with-card-out", options: options)
                #expect(saved.detached.map(\.device) == ["scsi-am"])
                #expect(saved.detached.first?.method == .resetVMNotRunning)
                #expect(saved.reattached.map(\.device) == ["scsi-am"])
                let snapshot = try #require(try await session.listSnapshots().first)
                #expect(snapshot.nodes == [QEMUCommandLine.IDs.diskFormatNode])
                #expect(try await session.pciIDs().contains("scsi-am"))
            }
            // The card's overlay outlives QEMU; scribble on it...
            #expect(try Self.qemuIO(overlay, "write -P 0x5a 1M 64k").status == 0)
            #expect(try DeviceLabFixture.run(["qemu-img", "compare", overlay, DeviceLabFixture.scsiTarget]).status == 1)
            try await fixture.withLab(lab, paused: true) { session in
                // ...a new attach starts from the base image again.
                _ = try await session.attach("scsi-am")
                let loaded = try await session.loadSnapshot("with-card-out")
                #expect(loaded.reattached.map(\.device) == ["scsi-am"])
            }
            let compare = try DeviceLabFixture.run(["qemu-img", "compare", overlay, DeviceLabFixture.scsiTarget])
            #expect(compare.status == 0, "\(compare.output)")
        } catch {
            fixture.cleanUp()
            throw error
        }
        fixture.cleanUp()
    }

    /// QEMU 7.2 refuses a snapshot while a device blocks migration. vfio-pci
    /// needs a host device this machine cannot give, so the real refusal comes
    /// from `ivshmem-plain` (peer mode), which registers a migration blocker
    /// exactly as 7.2's vfio does (hw/vfio/migration.c: migrate_add_blocker
    /// with "VFIO device doesn't support migration"); save_snapshot reports the
    /// first blocker's text as the job's error. The diagnosis is then checked
    /// against vfio's text.
    @Test func migrationBlockerMakesSaveFailWithQEMUsTextAndTheDiagnosis() async throws {
        let fixture = try DeviceLabFixture()
        let lab = try fixture.bareLab(extraTopLevel: """
            qemu_args: [-object, "memory-backend-ram,id=test-mem,size=1M", -device, "ivshmem-plain,memdev=test-mem,id=blocker"]
            """)
        do {
            try await fixture.withLab(lab, paused: true) { session in
                for backend in [SnapshotBackend.jobs, .hmp] {
                    do {
                        _ = try await session.saveSnapshot("blocked", options: SnapshotOptions(backend: backend))
                        Issue.record("save succeeded with a migration blocker (\(backend))")
                    } catch SnapshotError.failed(_, let tag, let text, _, _) {
                        #expect(tag == "blocked")
                        #expect(text.contains("Migration is disabled when using feature 'peer mode' in device 'ivshmem'"), "\(text)")
                    }
                }
                #expect(try await session.listSnapshots().isEmpty)
            }
        } catch {
            fixture.cleanUp()
            throw error
        }
        fixture.cleanUp()

        let vfioText = "VFIO device doesn't support migration"
        let diagnoses = Diagnoser.diagnose(vfioText)
        #expect(diagnoses.map(\.id).contains("migration-blocked"))
        let error = SnapshotError.failed(operation: "snapshot-save job", tag: "ready", qemuText: vfioText, vmStatus: "running", diagnoses: diagnoses)
        #expect(error.description.contains(vfioText))
        #expect(error.description.contains("strategy: reset"), "the fix: \(error.description)")
    }
}
