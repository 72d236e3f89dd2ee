import Foundation
import LabCore
import Platform
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
        #expect(try runtime.record?.qemuPID == newPID)
        #expect(try runtime.record?.revert?.mappedSnapshot == "ready")
        #expect(Self.files(in: ramDirectory) == ["snap-ready.ram"], "the live RAM file is freed once nothing maps it")
        // The old QEMU quit; the supervisor reaps it once it has freed its memory.
        #expect(waitUntil(limit: .seconds(30)) { !ProcessTable.isRunning(oldPID) })
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

    /// Kernel log lines that mean the guest's clock jumped (a revert that
    /// does not rewind the TSC): the reference's "soft lockup", "Marking
    /// clocksource 'tsc' as unstable", "Long readout interval".
    static let clockWarnings = "soft lockup|Marking clocksource|clocksource .* unstable|Long readout"

    /// `cycles` reverts of the running test guest to a snapshot taken after it
    /// ran a while; after each, the guest runs on and its kernel log (dmesg:
    /// a revert also reverts the log, so it is read every cycle) is searched
    /// for clock warnings. Returns the warning lines per cycle that had any.
    static func clockCheck(revert: String, cycles: Int) async throws -> [Int: String] {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let name = "clock-" + revert
        let file = try env.writeGuestLab(name, tests: "  none: {run: \"true\"}", extra: "revert: \(revert)")
        _ = try await env.controller.up(labFile: file, options: .init())
        let runtime = env.runtime(name)
        let session = try await LabSession.open(runtime: runtime)
        defer { session.close() }
        let console = try GuestConsole.connect(runtime: runtime)
        defer { console.close() }
        try await console.waitForReady(try session.guest)
        _ = try await console.run("sleep 2", timeout: .seconds(30))
        _ = try await session.saveSnapshot("ready")
        var warnings: [Int: String] = [:]
        for cycle in 1...cycles {
            let result = try await session.revert(to: "ready", attaching: [])
            #expect(result.method.rawValue == revert)
            console.skipReceived()
            let log = try await console.run("sleep 0.3; dmesg | grep -iE '\(clockWarnings)' || echo QLAB-CLOCK-CLEAN", timeout: .seconds(60))
            if !log.output.contains("QLAB-CLOCK-CLEAN") { warnings[cycle] = log.output }
        }
        return warnings
    }

    /// 50 fast reverts: every one a fresh QEMU, whose guest clock is the
    /// snapshot's; the kernel never logs a clock warning.
    @Test func fiftyFastRevertsLeaveNoClockWarning() async throws {
        try RunLoopTests.requireImages()
        let warnings = try await Self.clockCheck(revert: "fast", cycles: 50)
        #expect(warnings.isEmpty, "clock warnings after reverts \(warnings.keys.sorted()): \(warnings.values.first ?? "")")
    }

    /// The same with QEMU's loadvm in place, which does not rewind the guest
    /// TSC: the clock jump the docs describe, and proof that the check above
    /// sees warnings when there are some. Opt-in (QLAB_TEST_LOADVM_CLOCK=1): a
    /// measurement of QEMU's behaviour, not of qlab's.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["QLAB_TEST_LOADVM_CLOCK"] == "1"))
    func loadvmRevertsShowTheClockJump() async throws {
        try RunLoopTests.requireImages()
        let warnings = try await Self.clockCheck(revert: "loadvm", cycles: 50)
        print("loadvm: clock warnings after \(warnings.count) of 50 reverts (first: \(warnings.keys.min() ?? 0)): \(warnings.values.first ?? "")")
        #expect(!warnings.isEmpty)
    }

    /// A QEMU that dies while starting for a fast revert (a wrapper that
    /// fails the first copy-on-write start, as a crash would): the run that
    /// needed the revert is an error that says so, with QEMU's words, and the
    /// loop goes on (the guest boots again and the next runs pass).
    @Test func qemuDyingDuringARevertIsReportedAndTheLoopGoesOn() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let wrapper = env.labDirectory + "/qemu-crash-once"
        try """
            #!/bin/sh
            case "$*" in
              *share=off*)
                if [ ! -e "\(env.labDirectory)/crashed" ]; then
                  touch "\(env.labDirectory)/crashed"
                  echo "qemu-system-x86_64: qlab test: simulated crash while starting for a revert" >&2
                  exit 1
                fi;;
            esac
            exec qemu-system-x86_64 "$@"

            """.write(toFile: wrapper, atomically: true, encoding: .utf8)
        chmod(wrapper, 0o755)
        let file = try env.writeGuestLab("crashrev", tests: "  t: {run: \"true\"}", extra: "qemu: \(wrapper)")
        let json = env.root + "/report.json"
        let run = try env.qlab("run", file, "--repeat", "3", "--json-report", json)
        #expect(run.status == ExitStatus.infrastructure.rawValue, "only an error, no failed test: exit 5 (infrastructure): \(run.output)")
        let report = try TestReport(path: json)
        let outcomes = report.results.filter { !$0.isBoot }.map(\.outcome)
        #expect(outcomes == [.error, .passed, .passed], "\(run.output)\n\(report.results.map(\.message))")
        let failed = try #require(report.results.first { $0.outcome == .error })
        #expect(failed.message.contains("simulated crash while starting for a revert"), "\(failed.message)")
        #expect(FileManager.default.fileExists(atPath: env.labDirectory + "/crashed"))
        #expect(env.qemuProcesses().isEmpty)
    }

    /// Ctrl-C of `qlab run` while a fast revert replaces QEMU (a new QEMU pid
    /// has appeared: the supervisor is between starting it and answering):
    /// exit 130, and no QEMU, supervisor, runtime dir, lock file or RAM file is left.
    @Test func ctrlCDuringAFastRevertLeavesNothing() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("ctrlfast", tests: "  t: {run: \"true\"}")
        let run = try BackgroundQLab(env, ["run", file, "--repeat", "200"])
        var first: Int32?
        let replaced = waitUntil(limit: .seconds(300)) {
            let pids = env.qemuProcesses()
            if first == nil { first = pids.first }
            return pids.contains { $0 != first }
        }
        #expect(replaced, "no fast revert began: \(run.stdout)\(run.stderr)")
        let ram = try #require(try env.runtime("ctrlfast").record?.revert?.ramDirectory)
        let status = run.signal(SIGINT)
        #expect(status == 130, "\(run.stdout)\(run.stderr)")
        CancellationQEMUTests.expectNothingLeft(env, "ctrlfast", "after SIGINT during a fast revert")
        #expect(env.qemuProcesses().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: ram), "RAM files left in \(ram)")
    }
}

/// The fast method on a VM with no OS (firmware only): cheap, no guest boot.
@Suite("Fast revert (real QEMU, no OS)", .serialized)
struct FastRevertBareTests {
    /// What each of `pid`'s descriptors is, for a message when their count changed.
    static func fdTargets(_ pid: Int32) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).sorted { Int($0) ?? 0 < Int($1) ?? 0 }.map {
            "\($0)->" + ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) ?? "?")
        }
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
            var baselineTargets: [String] = []
            let overlay = fixture.stateRoot + "/bare-dev/bare/disk.qcow2"
            for cycle in 1...10 {
                let result = try await session.revert(to: "ready")
                #expect(result.method == .fast, "cycle \(cycle)")
                #expect(result.detached.map(\.method) == [.droppedWithQEMU])
                #expect(result.attached.map(\.device) == ["scsi-am"])
                let pid = session.currentRecord.qemuPID
                #expect(!seen.contains(pid), "cycle \(cycle): QEMU was not replaced")
                seen.insert(pid)
                #expect(waitUntil(limit: .seconds(30)) { fixture.qemuProcesses() == [pid] }, "cycle \(cycle): \(fixture.qemuProcesses())")
                #expect(try await session.qmp.queryStatus().status == "running")
                #expect(try await session.peripheralIDs().contains("scsi-am"))
                // The live RAM file is removed once nothing maps it.
                #expect(FastRevertTests.files(in: ram) == ["snap-ready.ram"])
                #expect(FastRevertTests.files(in: fixture.stateRoot + "/bare-dev/bare/hotplug") == ["scsi-am-disk0.qcow2"])
                // libdispatch opens a timerfd per clock kind the first time a timer of that kind is
                // armed (monotonic, uptime, wall: 3 at most), which a later cycle may do first:
                // those are counted apart, and bounded, not compared with cycle 2's.
                let targets = Self.fdTargets(supervisor)
                let timers = targets.filter { $0.hasSuffix("anon_inode:[timerfd]") }.count
                #expect(timers <= 3, "supervisor timerfds after cycle \(cycle): \(targets)")
                let now = (targets.count - timers, FileSystem.size(overlay) ?? -1)
                if cycle == 2 { baseline = now; baselineTargets = targets }
                if let baseline, cycle > 2 {
                    #expect(now.0 == baseline.fds, "supervisor descriptors after cycle \(cycle): \(targets), after cycle 2: \(baselineTargets)")
                    #expect(now.1 <= baseline.overlay + (1 << 20), "guest overlay grew after cycle \(cycle)")
                }
            }
            let events = try String(contentsOfFile: fixture.runtime("bare-dev").eventLogPath, encoding: .utf8)
            #expect(events.components(separatedBy: "\"QLAB_QEMU_REPLACED\"").count - 1 == 10)
        }
        #expect(fixture.qemuProcesses().isEmpty)
    }

    /// The shared mappings a fast revert can be measured with (``RAMImageMapping``,
    /// `qlab-bench revert --passthrough`): the new QEMU maps a copy of the RAM
    /// image `share=on` (`RAMDIR/mapped.ram`), the guest sees the snapshot's RAM,
    /// what is written to its RAM lands in the copy and never in the image, so
    /// the next revert gives the snapshot's RAM again. A premade copy is renamed
    /// into place; a revert asking for one that was not made is refused with the
    /// old QEMU untouched.
    @Test(arguments: [RAMImageMapping.copy, .premade])
    func aSharedCopyOfTheImageGivesTheSnapshotsRAMAndLeavesTheImageAlone(mapping: RAMImageMapping) async throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let lab = try fixture.bareLab()
        // 16 MiB into guest RAM: above what SeaBIOS uses (the VM stays paused anyway).
        let offset = 16 << 20
        let marker = Array("QLAB-SNAPSHOT-RAM".utf8)
        let changed = Array("QLAB-CHANGED--RAM".utf8)
        func write(_ bytes: [UInt8], into path: String) throws {
            let handle = try #require(FileHandle(forWritingAtPath: path))
            defer { try? handle.close() }
            try handle.seek(toOffset: UInt64(offset))
            try handle.write(contentsOf: Data(bytes))
        }
        func read(_ path: String) throws -> [UInt8] {
            let handle = try #require(FileHandle(forReadingAtPath: path))
            defer { try? handle.close() }
            try handle.seek(toOffset: UInt64(offset))
            return Array(try handle.read(upToCount: marker.count) ?? Data())
        }
        try await fixture.withLab(lab, paused: true) { session in
            let ram = try #require(session.currentRecord.revert?.ramDirectory)
            // The live file is the guest's RAM (shared): the marker is in the snapshot's RAM image.
            try write(marker, into: ram + "/" + RAMFiles.live)
            _ = try await session.saveSnapshot("ready")
            let image = ram + "/" + RAMFiles.image("ready")
            let mapped = ram + "/" + RAMFiles.mappedCopy
            /// What the guest has at `offset` (QEMU's pmemsave).
            func guestBytes() async throws -> [UInt8] {
                let dump = fixture.root + "/pmem.bin"
                try? FileManager.default.removeItem(atPath: dump)
                _ = try await session.qmp.execute("pmemsave", arguments: ["val": .int(Int64(offset)), "size": .int(Int64(marker.count)), "filename": .string(dump)])
                return Array(try Data(contentsOf: URL(fileURLWithPath: dump)))
            }
            for cycle in 1...2 {
                if mapping == .premade {
                    #expect(try session.premakeRAMCopy("ready") > 0)
                    #expect(FileManager.default.fileExists(atPath: ram + "/" + RAMFiles.premadeCopy("ready")))
                }
                let before = session.currentRecord.qemuPID
                let result = try await session.revert(to: "ready", attaching: [], mapping: mapping)
                #expect(result.method == .fast)
                #expect(result.via.contains("\(RAMFiles.mappedCopy) (\(mapping.rawValue) of snap-ready.ram, share=on)"), "\(result.via)")
                let pid = session.currentRecord.qemuPID
                #expect(pid != before, "cycle \(cycle): QEMU was not replaced")
                let argv = try String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8).split(separator: "\0")
                #expect(argv.contains { $0.contains("mem-path=\(mapped),share=on") }, "cycle \(cycle): \(argv)")
                if mapping == .premade { #expect(!FileManager.default.fileExists(atPath: ram + "/" + RAMFiles.premadeCopy("ready"))) }
                // The snapshot's RAM, also after cycle 1 changed the copy it mapped.
                #expect(try await guestBytes() == marker, "cycle \(cycle)")
                // Shared: a write to the copy is the guest's RAM; the image keeps the snapshot's.
                try write(changed, into: mapped)
                #expect(try await guestBytes() == changed, "cycle \(cycle)")
                #expect(try read(image) == marker, "cycle \(cycle)")
            }
            if mapping == .premade {
                let pid = session.currentRecord.qemuPID
                do {
                    _ = try await session.revert(to: "ready", attaching: [], mapping: .premade)
                    Issue.record("a premade revert without a premade copy was not refused")
                } catch SnapshotError.failed(_, _, let text, _, _) {
                    #expect(text.contains("no premade copy of snapshot ready's RAM image"), "\(text)")
                }
                #expect(session.currentRecord.qemuPID == pid)
                #expect(try await guestBytes() == changed)
            }
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
        let record = try #require(try fixture.runtime("bare-dev").record)
        kill(record.supervisorPID, SIGKILL)
        kill(record.qemuPID, SIGKILL)
        // Both gone before `rm`, which refuses a lab whose supervisor still runs (a SIGKILL is not instant).
        _ = await ProcessTable.waitGone(record.qemuPID, timeout: .seconds(10))
        _ = await ProcessTable.waitGone(record.supervisorPID, timeout: .seconds(10))
        #expect(FileManager.default.fileExists(atPath: ram))
        let removal = try await fixture.controller.remove("bare-dev")
        #expect(removal.removedAnything)
        #expect(!FileManager.default.fileExists(atPath: ram))
    }
}
