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
