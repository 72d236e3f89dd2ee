import Foundation
import LabCore
import QMP
import Testing

/// The fast revert method against real QEMU 7.2 and the test guest (TCG):
/// guest RAM in a file, snapshots with a RAM image, a revert as a fresh QEMU
/// on a copy-on-write map of that image (docs/devices-snapshots.md).
@Suite("Fast revert (real guest)", .serialized)
struct FastRevertTests {
    static func files(in directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }

    /// Save with a card plugged in (unplugged and re-plugged around the
    /// save), write in guest tmpfs and on the guest disk, revert: both are
    /// back; the card is plugged in again and works; the console (this
    /// one, and `qlab exec` by path) follows the new QEMU; a save from the
    /// copy-on-write QEMU keeps RAM in qcow2 and loads in place; delete and
    /// down remove the RAM images.
    @Test func fastRevertRestoresTmpfsAndDiskAndFollowsTheNewQEMU() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("fast", tests: "  none: {run: \"true\"}")
        let up = try await env.controller.up(labFile: file, options: .init())
        let runtime = env.runtime("fast")
        let revert = try #require(up.record.revert)
        #expect(revert.method == .fast, "\(revert.reason)")
        let ramDirectory = try #require(revert.ramDirectory)
        #expect(up.record.argv.contains { $0.hasPrefix("memory-backend-file,id=pc.ram,size=256M,mem-path=\(ramDirectory)/live.ram,share=on") })
        let session = try await LabSession.open(runtime: runtime)
        defer { session.close() }
        var console = try GuestConsole.connect(runtime: runtime)
        defer { console.close() }
        try await console.waitForReady(try session.guest)

        _ = try await session.attach("scsi-lsi")
        let saved = try await session.saveSnapshot("ready")
        #expect(saved.method == .fast)
        #expect(saved.detached.map(\.device) == ["scsi-lsi"])
        #expect(saved.reattached.map(\.device) == ["scsi-lsi"])
        #expect(Self.files(in: ramDirectory) == ["live.ram", "snap-ready.ram"])
        // Device state only: far less than the 256 MiB guest.
        let info = try #require(try await session.listSnapshots().first { $0.tag == "ready" })
        #expect(info.vmStateSize < 16 << 20, "VM state \(info.vmStateSize) bytes")

        console.skipReceived()
        let write = try await console.run(
            "echo QLAB-AFTER > /tmp/qlab-after; echo QLAB-MARK-77 | dd of=/dev/vda bs=512 count=1 conv=fsync 2>/dev/null; head -c 12 /dev/vda",
            timeout: .seconds(30))
        #expect(write.output.contains("QLAB-MARK-77"))

        let oldPID = session.currentRecord.qemuPID
        let result = try await session.revert(to: "ready")
        #expect(result.method == .fast)
        #expect(result.via.hasPrefix("fresh QEMU on snap-ready.ram"), "\(result.via)")
        #expect(result.detached.map(\.device) == ["scsi-lsi"])
        #expect(result.attached.map(\.device) == ["scsi-lsi"])
        let newPID = session.currentRecord.qemuPID
        #expect(newPID != oldPID)
        #expect(runtime.record?.qemuPID == newPID)
        #expect(runtime.record?.revert?.mappedSnapshot == "ready")
        #expect(Self.files(in: ramDirectory) == ["snap-ready.ram"], "the live RAM file is freed once nothing maps it")
        #expect(!ProcessTable.isRunning(oldPID))
        #expect(env.qemuProcesses() == [newPID])
        #expect(try await session.qmp.queryStatus().status == "running")

        let check = try await console.run(
            "test -e /tmp/qlab-after && echo TMPFS-KEPT || echo TMPFS-GONE; echo 3 > /proc/sys/vm/drop_caches; head -c 12 /dev/vda | od -c | head -1",
            timeout: .seconds(30))
        #expect(check.output.contains("TMPFS-GONE"), "\(check.output)")
        #expect(!check.output.contains("Q   L   A   B   -   M   A   R   K"), "\(check.output)")
        let card = try await console.run("qlab-scsi-scan -w 20 -n 1 >/dev/null && qlab-target-check /dev/sda", timeout: .seconds(60))
        #expect(card.output.contains("qlab-target-check: ok"), "\(card.output)")

        // Clients that connect by path find the new QEMU (QEMU serves one console client at a time).
        console.close()
        let exec = try env.qlab("exec", "fast", "--", "echo", "EXEC-OK")
        #expect(exec.status == 0, "\(exec.output)")
        #expect(exec.stdout.contains("EXEC-OK"), "\(exec.output)")
        let events = try String(contentsOfFile: runtime.eventLogPath, encoding: .utf8)
        #expect(events.contains("\"QLAB_QEMU_REPLACED\""))
        console = try GuestConsole.connect(runtime: runtime)

        // A save from the copy-on-write QEMU: RAM into qcow2, loaded in place.
        let second = try await session.saveSnapshot("second")
        #expect(second.method == .loadvm)
        #expect(second.methodReason.contains("copy-on-write"), "\(second.methodReason)")
        #expect(!Self.files(in: ramDirectory).contains("snap-second.ram"))
        let loaded = try await session.loadSnapshot("second")
        #expect(loaded.method == .loadvm)
        #expect(session.currentRecord.qemuPID == newPID)
        let alive = try await console.run("echo ALIVE", timeout: .seconds(30))
        #expect(alive.output.contains("ALIVE"))

        _ = try await session.deleteSnapshot("ready")
        #expect(!Self.files(in: ramDirectory).contains("snap-ready.ram"))
        session.close()
        console.close()
        _ = try await env.controller.down("fast")
        #expect(!FileManager.default.fileExists(atPath: ramDirectory))
        #expect(env.qemuProcesses().isEmpty)
    }
}

/// The fast method on a VM with no OS (firmware only): cheap, no guest boot.
@Suite("Fast revert (real QEMU, no OS)", .serialized)
struct FastRevertBareTests {
    static func fdCount(_ pid: Int32) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count
    }

    /// Ten fast reverts: each a new QEMU (the old one reaped), one QEMU at a
    /// time, the card re-plugged each time, and nothing grows: the
    /// supervisor's descriptors, RAM files, hotplug overlays, the guest overlay.
    @Test func tenFastRevertsReplaceQEMUAndLeakNothing() async throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let lab = try fixture.bareLab()
        try await fixture.withLab(lab) { session in
            let ram = try #require(session.currentRecord.revert?.ramDirectory)
            #expect(session.revertMethod == .fast)
            _ = try await session.attach("scsi-am")
            // No OS to release the card: the save may reset to unplug it.
            let saved = try await session.saveSnapshot("ready", options: SnapshotOptions(unplugPolicy: .standard))
            #expect(saved.method == .fast)
            #expect(saved.reattached.map(\.device) == ["scsi-am"])
            let supervisor = session.currentRecord.supervisorPID
            var seen: Set<Int32> = [session.currentRecord.qemuPID]
            var baseline: (fds: Int, overlay: Int)?
            let overlay = fixture.stateRoot + "/bare-dev/bare/disk.qcow2"
            for cycle in 1...10 {
                let result = try await session.revert(to: "ready")
                #expect(result.method == .fast, "cycle \(cycle)")
                #expect(result.detached.map(\.method) == [.droppedWithQEMU])
                #expect(result.attached.map(\.device) == ["scsi-am"])
                let pid = session.currentRecord.qemuPID
                #expect(!seen.contains(pid), "cycle \(cycle): QEMU was not replaced")
                seen.insert(pid)
                #expect(fixture.qemuProcesses() == [pid], "cycle \(cycle)")
                #expect(try await session.qmp.queryStatus().status == "running")
                #expect(try await session.peripheralIDs().contains("scsi-am"))
                // The live RAM file is removed once nothing maps it.
                #expect(FastRevertTests.files(in: ram) == ["snap-ready.ram"])
                #expect(FastRevertTests.files(in: fixture.stateRoot + "/bare-dev/bare/hotplug") == ["scsi-am-disk0.qcow2"])
                let now = (Self.fdCount(supervisor), FileSystem.size(overlay) ?? -1)
                if cycle == 2 { baseline = now }
                if let baseline, cycle > 2 {
                    #expect(now.0 == baseline.fds, "supervisor descriptors after cycle \(cycle)")
                    #expect(now.1 <= baseline.overlay + (1 << 20), "guest overlay grew after cycle \(cycle)")
                }
            }
            let events = try String(contentsOfFile: fixture.runtime("bare-dev").eventLogPath, encoding: .utf8)
            #expect(events.components(separatedBy: "\"QLAB_QEMU_REPLACED\"").count - 1 == 10)
        }
        #expect(fixture.qemuProcesses().isEmpty)
    }

    /// `down` removes the RAM images; a fast snapshot then cannot be loaded,
    /// and the error says why and what to do. `rm` removes a RAM directory a
    /// killed supervisor left.
    @Test func downRemovesRAMImagesAndTheSnapshotSaysSo() async throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let lab = try fixture.bareLab()
        var ram = ""
        try await fixture.withLab(lab, paused: true) { session in
            ram = try #require(session.currentRecord.revert?.ramDirectory)
            _ = try await session.saveSnapshot("kept")
            #expect(FastRevertTests.files(in: ram) == ["live.ram", "snap-kept.ram"])
        }
        #expect(!FileManager.default.fileExists(atPath: ram))
        try await fixture.withLab(lab, paused: true) { session in
            do {
                _ = try await session.loadSnapshot("kept")
                Issue.record("loaded a fast snapshot without its RAM image")
            } catch SnapshotError.failed(_, _, let text, _, _) {
                #expect(text.contains("its RAM image (snap-kept.ram) is gone"), "\(text)")
            }
        }
        // A supervisor killed with its lab leaves RAM files; `rm` takes them.
        _ = try await fixture.controller.up(labFile: lab, options: .init(paused: true))
        let record = try #require(fixture.runtime("bare-dev").record)
        kill(record.supervisorPID, SIGKILL)
        kill(record.qemuPID, SIGKILL)
        _ = await ProcessTable.waitGone(record.qemuPID, timeout: .seconds(10))
        #expect(FileManager.default.fileExists(atPath: ram))
        let removal = try await fixture.controller.remove("bare-dev")
        #expect(removal.removedAnything)
        #expect(!FileManager.default.fileExists(atPath: ram))
    }
}
