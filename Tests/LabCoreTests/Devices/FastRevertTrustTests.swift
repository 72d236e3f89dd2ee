import Foundation
import LabCore
import Platform
import QMP
import Testing

/// What a fast revert trusts, against real QEMU on a VM with no OS (64 MiB,
/// cheap): the RAM image is the one the save wrote, a load leaves the VM
/// running whatever failed before it, a command killed half-way is finished
/// by the next one, and nothing the new QEMU needs is found missing only
/// after the old one quit. /dev/shm holds at most the live file and two
/// 64 MiB images per test, all removed with the lab.
@Suite("Fast revert trust (real QEMU, no OS)", .serialized)
struct FastRevertTrustTests {
    static let lab = "bare-dev"

    static func status(_ session: LabSession) async throws -> String {
        try await session.qmp.queryStatus().status
    }

    /// The error text of a refused snapshot load.
    static func refusal(_ body: () async throws -> Void) async -> String? {
        do {
            try await body()
            return nil
        } catch SnapshotError.failed(_, _, let text, _, _) {
            return text
        } catch {
            return "\(error)"
        }
    }

    /// s2's image under s1's name, an image zeroed in place with its mtime put
    /// back, a truncated one: each load is refused before QEMU is touched
    /// (same pid, still running), naming the image and what changed; the
    /// images put back as saved load again.
    @Test func aRAMImageThatIsNotTheSavedOneIsRefused() async throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        try await fixture.withLab(try fixture.bareLab()) { first in
            var session = first
            defer { session.close() }
            let ram = try #require(session.currentRecord.revert?.ramDirectory)
            _ = try await session.saveSnapshot("s1")
            _ = try await session.saveSnapshot("s2")
            let fingerprint = try #require(session.currentRecord.revert?.images?["s1"])
            #expect(fingerprint.size == 64 << 20)
            #expect(!fingerprint.sampleOffsets.isEmpty)
            let pid = session.currentRecord.qemuPID
            let (s1, s2) = (ram + "/snap-s1.ram", ram + "/snap-s2.ram")
            let files = FileManager.default

            // Swapped.
            try files.moveItem(atPath: s1, toPath: ram + "/keep.ram")
            try files.moveItem(atPath: s2, toPath: s1)
            var text = await Self.refusal { _ = try await session.loadSnapshot("s1") }
            #expect(text?.contains(s1) == true && text?.contains("another file is in its place") == true, "\(text ?? "loaded")")
            #expect(session.currentRecord.qemuPID == pid)
            #expect(try await Self.status(session) == "running")
            // The CLI says the same, with exit 1 and the lab untouched (QEMU serves one QMP client at a time).
            session.close()
            let cli = try fixture.qlab("snapshot", "load", Self.lab, "s1")
            #expect(cli.status == 1 && cli.output.contains("not the one `snapshot save` wrote"), "\(cli.output)")
            #expect(try fixture.runtime(Self.lab).record?.qemuPID == pid)
            session = try await LabSession.open(runtime: fixture.runtime(Self.lab))
            #expect(try await Self.status(session) == "running")
            try files.moveItem(atPath: s1, toPath: s2)
            try files.moveItem(atPath: ram + "/keep.ram", toPath: s1)

            // Zeroed in place, its mtime put back: only the sampled pages tell.
            let reference = fixture.root + "/s2-times"
            #expect(try DeviceLabFixture.run(["touch", "-r", s2, reference]).status == 0)
            #expect(try DeviceLabFixture.run(["dd", "if=/dev/zero", "of=\(s2)", "bs=1M", "count=64", "conv=notrunc", "status=none"]).status == 0)
            #expect(try DeviceLabFixture.run(["touch", "-r", reference, s2]).status == 0)
            text = await Self.refusal { _ = try await session.loadSnapshot("s2") }
            #expect(text?.contains("its content differs") == true && text?.contains(s2) == true, "\(text ?? "loaded")")
            #expect(session.currentRecord.qemuPID == pid)

            // Truncated.
            #expect(truncate(s1, 1 << 20) == 0)
            text = await Self.refusal { _ = try await session.loadSnapshot("s1") }
            #expect(text?.contains("its size was \(64 << 20) bytes, is \(1 << 20)") == true, "\(text ?? "loaded")")
            #expect(session.currentRecord.qemuPID == pid)
            #expect(try await Self.status(session) == "running")
            #expect(fixture.qemuProcesses() == [pid])

            // A good image still loads (a fresh QEMU): the check refuses only what changed.
            _ = try await session.saveSnapshot("s3")
            let loaded = try await session.loadSnapshot("s3")
            #expect(loaded.method == .fast)
            #expect(session.currentRecord.qemuPID != pid)
            #expect(try await Self.status(session) == "running")
        }
        #expect(fixture.qemuProcesses().isEmpty)
    }

    /// A load that fails in the new QEMU (its snapshot deleted from the disk
    /// behind qlab's back, the RAM image kept) leaves that QEMU stopped; the
    /// next good load says loaded and the VM runs.
    @Test func aGoodLoadAfterAFailedOneLeavesTheVMRunning() async throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        try await fixture.withLab(try fixture.bareLab()) { session in
            _ = try await session.saveSnapshot("good")
            _ = try await session.saveSnapshot("broken")
            let output = try await session.qmp.humanMonitorCommand(try HMPCommand("delvm", ["broken"]))
            #expect(output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(output)")
            let text = await Self.refusal { _ = try await session.revert(to: "broken", attaching: []) }
            #expect(text != nil)
            #expect(try await Self.status(session) != "running", "the failed load's QEMU stays stopped")
            #expect(session.currentRecord.revert?.pending?.phase == .failed)

            let loaded = try await session.loadSnapshot("good")
            #expect(loaded.method == .fast)
            #expect(try await Self.status(session) == "running")
            #expect(session.currentRecord.revert?.pending == nil)
        }
        #expect(fixture.qemuProcesses().isEmpty)
    }

    /// SIGKILL of `qlab snapshot load` while the supervisor replaces QEMU
    /// (ordered by a gate: the new QEMU starts only once the test opens it,
    /// after the kill). The supervisor finishes the load and leaves the new
    /// QEMU stopped for the client that is gone; the next command on the lab
    /// (`snapshot list`) resumes it: QEMU runs and the record has nothing pending.
    @Test func sigkillOfSnapshotLoadIsFinishedByTheNextCommand() async throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let gate = fixture.labDirectory + "/gate"
        let wrapper = fixture.labDirectory + "/qemu-gated"
        try """
            #!/bin/sh
            case "$*" in
              *share=off*)
                n=0
                while [ ! -e "\(gate)" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done;;
            esac
            exec "${QLAB_QEMU:-qemu-system-x86_64}" "$@"

            """.write(toFile: wrapper, atomically: true, encoding: .utf8)
        chmod(wrapper, 0o755)
        let labFile = try fixture.bareLab(extraTopLevel: "qemu: \(wrapper)")
        _ = try await fixture.controller.up(labFile: labFile, options: .init())
        let runtime = fixture.runtime(Self.lab)
        let session = try await LabSession.open(runtime: runtime)
        _ = try await session.saveSnapshot("s1")
        session.close()
        let oldPID = try #require(try runtime.record?.qemuPID)

        let load = try BackgroundQLab(fixture, ["snapshot", "load", Self.lab, "s1"])
        // The supervisor has started the new QEMU (held at the gate): the client waits for its answer.
        let spawned = waitUntil(limit: .seconds(60)) { (try? runtime.records.reload())?.qemuPID != oldPID }
        #expect(spawned, "\(load.stdout)\(load.stderr)")
        let status = load.signal(SIGKILL)
        #expect(status == BackgroundQLab.killedBy + SIGKILL, "the load ended before the kill: \(load.stdout)\(load.stderr)")
        #expect(FileManager.default.createFile(atPath: gate, contents: nil))
        // The supervisor finishes on its own: loaded, stopped, waiting for a client's cont.
        #expect(waitUntil(limit: .seconds(60)) { (try? runtime.records.reload())?.revert?.pending?.phase == .loaded })
        let monitor = try await runtime.connectQMP(timeout: .seconds(10))
        #expect(try await monitor.queryStatus().status == "prelaunch")
        monitor.close()

        let list = try fixture.qlab("snapshot", "list", Self.lab)
        #expect(list.status == 0, "\(list.output)")
        let after = try await LabSession.open(runtime: fixture.runtime(Self.lab))
        #expect(try await Self.status(after) == "running")
        #expect(after.currentRecord.revert?.pending == nil)
        #expect(after.currentRecord.qemuPID != oldPID)
        after.close()
        await fixture.down(Self.lab)
        #expect(fixture.qemuProcesses().isEmpty)
    }

    /// SIGKILL of `qlab snapshot save` (fast, a card plugged in) once the
    /// record says the save is under way: the next command finds record and
    /// QEMU in agreement: the VM runs, `x-ignore-shared` is off, no qlab job
    /// is left, the card's record state is what QEMU has, no temporary image
    /// is left, and the snapshot has its RAM image and fingerprint or neither.
    @Test func sigkillOfSnapshotSaveIsFinishedByTheNextCommand() async throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        try await fixture.withLab(try fixture.bareLab()) { session in
            let runtime = fixture.runtime(Self.lab)
            let ram = try #require(session.currentRecord.revert?.ramDirectory)
            _ = try await session.attach("scsi-am")
            session.close()
            let save = try BackgroundQLab(fixture, ["snapshot", "save", Self.lab, "s1", "--reset-fallback"])
            // Ordered by the record: kill as soon as it says the save is under way.
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline, save.process.isRunning, (try? runtime.records.reload())?.revert?.pending == nil { usleep(1000) }
            let status = save.signal(SIGKILL)
            #expect(status == BackgroundQLab.killedBy + SIGKILL, "the save ended before the kill: \(save.stdout)\(save.stderr)")

            let list = try fixture.qlab("snapshot", "list", Self.lab)
            #expect(list.status == 0, "\(list.output)")
            let after = try await LabSession.open(runtime: fixture.runtime(Self.lab))
            defer { after.close() }
            #expect(try await Self.status(after) == "running")
            #expect(after.currentRecord.revert?.pending == nil)
            let capabilities = try await after.qmp.execute("query-migrate-capabilities").arrayValue ?? []
            #expect(capabilities.first { $0["capability"]?.stringValue == "x-ignore-shared" }?["state"]?.boolValue == false)
            let jobs = try await after.qmp.execute("query-jobs").arrayValue ?? []
            #expect(jobs.isEmpty, "\(jobs)")
            let plugged = try await after.peripheralIDs().contains("scsi-am")
            #expect((after.currentDeviceState("scsi-am") == .hotplug) == plugged)
            let images = FastRevertTests.files(in: ram).filter { $0 != "live.ram" }
            let saved = try await after.listSnapshots().contains { $0.tag == "s1" }
            #expect(images == (saved ? ["snap-s1.ram"] : []), "snapshot s1 \(saved ? "exists" : "does not exist"); RAM files \(images)")
            #expect((after.currentRecord.revert?.images?["s1"] != nil) == saved)
        }
        #expect(fixture.qemuProcesses().isEmpty)
    }

    /// The lab's disk overlay removed while it runs: `snapshot load` is
    /// refused before the old QEMU quits (it runs on, same pid), naming the file.
    @Test func aMissingOverlayRefusesTheRevertWithTheOldQEMURunning() async throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        try await fixture.withLab(try fixture.bareLab()) { session in
            _ = try await session.saveSnapshot("s1")
            let pid = session.currentRecord.qemuPID
            let overlay = fixture.stateRoot + "/\(Self.lab)/bare/disk.qcow2"
            #expect(unlink(overlay) == 0)
            session.close()
            let cli = try fixture.qlab("snapshot", "load", Self.lab, "s1")
            #expect(cli.status == 1, "\(cli.output)")
            #expect(cli.output.contains(overlay) && cli.output.contains("before the old QEMU quit"), "\(cli.output)")
            #expect(try fixture.runtime(Self.lab).record?.qemuPID == pid)
            #expect(ProcessTable.isRunning(pid))
            #expect(fixture.qemuProcesses() == [pid])
            let after = try await LabSession.open(runtime: fixture.runtime(Self.lab))
            defer { after.close() }
            #expect(try await Self.status(after) == "running")
            #expect(after.currentRecord.revert?.pending == nil)
        }
        #expect(fixture.qemuProcesses().isEmpty)
    }

    /// `up` allocates the live RAM file's blocks before QEMU maps it (a VM
    /// with no OS touches little of its RAM, yet all of it is allocated); a
    /// QEMU with file-backed RAM that dies of SIGBUS gets the
    /// `ram-file-full` diagnosis in its exit record.
    @Test func theLiveRAMFileIsAllocatedAndASIGBUSIsDiagnosed() async throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let up = try await fixture.controller.up(labFile: try fixture.bareLab(), options: .init(paused: true))
        let ram = try #require(up.record.revert?.ramDirectory)
        var info = stat()
        #expect(stat(ram + "/live.ram", &info) == 0)
        #expect(Int(info.st_blocks) * 512 >= 64 << 20, "allocated \(Int(info.st_blocks) * 512) bytes of a 64 MiB guest's RAM file")
        kill(up.record.qemuPID, SIGBUS)
        let runtime = fixture.runtime(Self.lab)
        #expect(waitUntil(limit: .seconds(30)) { runtime.exitRecord != nil })
        let exit = try #require(runtime.exitRecord)
        #expect(exit.diagnoses.map(\.id).contains("ram-file-full"), "\(exit.qemuOutput) \(exit.diagnoses.map(\.id))")
        #expect(exit.qemuOutput.contains("\(ram)/live.ram"), "\(exit.qemuOutput)")
        // The supervisor removes the RAM files after it writes the exit record.
        #expect(waitUntil(limit: .seconds(30)) { !FileManager.default.fileExists(atPath: ram) })
    }
}

/// The pieces of the checks, without QEMU.
@Suite("Fast revert trust (parts)")
struct FastRevertTrustPartTests {
    /// Sampled pages are spread over the data extents, page-aligned, the first one included.
    @Test func sampleOffsetsFollowTheData() {
        let offsets = RAMImageFingerprint.sampleOffsets([(start: 1 << 20, end: 2 << 20), (start: 8 << 20, end: 9 << 20)])
        #expect(offsets.first == 1 << 20)
        #expect(offsets.count == RAMImageFingerprint.sampleCount)
        #expect(offsets.allSatisfy { $0 % 4096 == 0 && (($0 >= 1 << 20 && $0 < 2 << 20) || ($0 >= 8 << 20 && $0 < 9 << 20)) })
        #expect(offsets.contains { $0 >= 8 << 20 })
        #expect(RAMImageFingerprint.sampleOffsets([]) == [0])
    }

    /// The disk files of a command line and a qcow2 backing chain whose base is gone.
    @Test func preflightFindsAMissingBackingFile() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let base = env.root + "/base,1.qcow2"
        let overlay = env.root + "/overlay.qcow2"
        #expect(try DeviceLabFixture.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "1M"]).status == 0)
        #expect(try DeviceLabFixture.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "base,1.qcow2", overlay]).status == 0)
        let argv = ["qemu", "-blockdev", "driver=file,node-name=f,filename=\(overlay)", "-blockdev", "driver=qcow2,node-name=q,file=f",
                    "-blockdev", "driver=file,node-name=g,filename=\(base.replacingOccurrences(of: ",", with: ",,"))"]
        #expect(ReplacementPreflight.blockdevFiles(argv) == [overlay, base])
        #expect(ReplacementPreflight.missingFiles(argv).isEmpty)
        #expect(unlink(base) == 0)
        let missing = ReplacementPreflight.missingFiles(argv)
        #expect(missing.count == 2 && missing.allSatisfy { $0.contains(base) }, "\(missing)")
        #expect(missing.first?.contains("in the backing chain of \(overlay)") == true, "\(missing)")
    }
}
