import Foundation
import LabCore
import Platform
import QMP
import Testing

/// A private runtime/state root and lab directory for one device or snapshot
/// test, labs started through ``LabController`` (the built qlab binary runs
/// the supervisor), and a teardown that takes every lab down and kills any
/// QEMU left, whether the test passed or not.
final class DeviceLabFixture: QLabTestEnvironment, @unchecked Sendable {
    init() throws {
        try super.init(prefix: "qdv")
    }

    static var scsiTarget: String { imagesOut + "/scsi-target.qcow2" }

    /// True when images/build.sh has built the test guest.
    static var haveGuestImages: Bool {
        ["linux/vmlinuz", "linux/initrd.img", "linux/disk.qcow2", "scsi-target.qcow2"].allSatisfy {
            FileManager.default.fileExists(atPath: imagesOut + "/" + $0)
        }
    }

    /// The repository's emulated-scsi lab with its image paths made absolute.
    /// `revert`: the lab's `revert:` key, when given.
    func emulatedLab(revert: String? = nil) throws -> String {
        let text = try String(contentsOfFile: Self.repositoryRoot + "/labs/emulated-scsi.yaml", encoding: .utf8)
        return try writeLab("emulated-scsi", text.replacingOccurrences(of: "../images/out", with: Self.imagesOut) + (revert.map { "\nrevert: \($0)\n" } ?? ""))
    }

    /// A lab with no OS (a blank qcow2 disk: snapshots work, nothing boots)
    /// and one hotplug am53c974 with the SCSI target disk.
    func bareLab(name: String = "bare-dev", extraTopLevel: String = "") throws -> String {
        let disk = labDirectory + "/blank.qcow2"
        if !FileManager.default.fileExists(atPath: disk) {
            let result = try Self.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"])
            #expect(result.status == 0, "\(result.output)")
        }
        return try writeLab(name, """
            name: \(name)
            machine: {type: q35, accel: tcg, memory: 64M}
            devices:
              scsi-am:
                emulated: {driver: am53c974, disks: [{image: \(Self.scsiTarget)}]}
                attach: hotplug
            guests:
              bare: {os: linux, disk: blank.qcow2}
            \(extraTopLevel)
            """)
    }

    /// `up`, then a session; the body runs; the session closes and the lab
    /// goes down whatever happened.
    func withLab<T>(
        _ labFile: String, paused: Bool = false, _ body: (LabSession) async throws -> T
    ) async throws -> T {
        let result = try await controller.up(labFile: labFile, options: LabController.UpOptions(paused: paused))
        let name = result.record.name
        do {
            let session = try await LabSession.open(runtime: runtime(name))
            let value: T
            do {
                value = try await body(session)
            } catch {
                session.close()
                throw error
            }
            session.close()
            await down(name)
            return value
        } catch {
            await down(name)
            throw error
        }
    }

    func down(_ name: String) async {
        let record = (try? runtime(name).record) ?? nil
        _ = try? await controller.down(name)
        if let pid = record?.qemuPID, ProcessTable.isRunning(pid) { kill(pid, SIGKILL) }
    }

    /// Waits until the guest's console log shows `text`.
    func waitForConsole(_ lab: String, guest: String, text: String, timeout: Duration = .seconds(180)) async throws {
        let log = stateRoot + "/" + lab + "/" + guest + "/console.log"
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let content = try? String(contentsOfFile: log, encoding: .utf8), content.contains(text) { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("the guest did not print \(text) within \(timeout); console log: \(log)")
        throw CancellationError()
    }

    struct Run {
        var status: Int32
        var output: String
    }

    /// Runs a program (PATH lookup) to completion; stdout and stderr together.
    static func run(_ argv: [String], environment: [String: String]? = nil) throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = argv
        if let environment { process.environment = environment }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }

    /// SHA-256 of a file (`sha256sum`), to show a base image was not written.
    static func digest(_ path: String) throws -> String {
        String(try run(["sha256sum", path]).output.prefix(64))
    }
}

extension LabSession {
    /// QEMU's device ids: QOM's /machine/peripheral, which also has cards
    /// behind a bridge the firmware has not numbered yet (query-pci misses
    /// those in a VM started with -S).
    func pciIDs() async throws -> Set<String> {
        try await peripheralIDs()
    }

    /// Node names QEMU has now.
    func blockNodeNames() async throws -> Set<String> {
        let reply = try await qmp.execute("query-named-block-nodes", arguments: ["flat": true])
        return Set((reply.arrayValue ?? []).compactMap { $0["node-name"]?.stringValue })
    }
}
