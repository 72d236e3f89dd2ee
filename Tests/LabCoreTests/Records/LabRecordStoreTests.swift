import Foundation
import LabCore
import Platform
import QMP
import Testing

/// `lab.json` through one ``LabRecordStore`` per command or session (issue 11).
@Suite("Lab record store (issue 11)", .serialized)
struct LabRecordStoreTests {
    /// One session writes a device state; a session opened after sees it,
    /// and a store that read the record before keeps its copy until it reloads.
    @Test(.enabled(if: DeviceLabFixture.haveGuestImages, "run images/build.sh first"))
    func aSessionSeesTheDeviceStateAnotherWroteAfterReopening() async throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let lab = try fixture.bareLab()
        let up = try await fixture.controller.up(labFile: lab, options: LabController.UpOptions(paused: true))
        let name = up.record.name
        do {
            // Another command's view, read before the change.
            let other = LabRecordStore(name: name, runtimeRoot: fixture.runtimeRoot)
            #expect(try other.read()?.devices.first { $0.name == "scsi-am" }?.state == .detached)

            let first = try await LabSession.open(runtime: fixture.runtime(name))
            do {
                try first.setDeviceState("scsi-am", .hotplug)
                #expect(first.currentRecord.devices.first { $0.name == "scsi-am" }?.state == .hotplug)
            } catch {
                first.close()
                throw error
            }
            first.close()

            let second = try await LabSession.open(runtime: fixture.runtime(name))
            let seen = second.currentRecord.devices.first { $0.name == "scsi-am" }?.state
            second.close()
            #expect(seen == .hotplug)
            // The other store read once and keeps what it read; reloading shows the write.
            #expect(try other.read()?.devices.first { $0.name == "scsi-am" }?.state == .detached)
            #expect(try other.reload()?.devices.first { $0.name == "scsi-am" }?.state == .hotplug)
            // Everything else the supervisor wrote is kept as it was.
            #expect(try other.read()?.qemuPID == up.record.qemuPID)
        } catch {
            await fixture.down(name)
            throw error
        }
        await fixture.down(name)
        #expect(fixture.qemuProcesses().isEmpty)
    }

    /// A `lab.json` that does not decode: opening a session says which file
    /// and which field, and the CLI exits 1 with that message.
    @Test func aCorruptRecordNamesTheFileAndTheField() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let runtime = env.runtime("broken")
        try runtime.makeDirectories()
        let path = runtime.recordPath
        let cases: [(json: String, field: String)] = [
            (Self.record(pid: "\"4242\""), "qemu_pid"),
            (Self.record(pid: "4242", devices: #"[{"name": "a", "state": "boot"}, {"name": "b", "state": "sideways"}]"#), "devices[1].state"),
            (Self.record(pid: "4242").replacingOccurrences(of: #""guest": "bare", "#, with: ""), "guest"),
        ]
        for (json, field) in cases {
            try FileSystem.writeAtomically(path, Array(json.utf8))
            let store = LabRecordStore(name: "broken", runtimeRoot: env.runtimeRoot)
            do {
                _ = try store.read()
                Issue.record("a record with a bad \(field) was read")
            } catch {
                #expect(error.path == path)
                #expect(error.field == field, "\(error)")
                #expect(error.description.hasPrefix(path + ": field " + field + ":"), "\(error)")
            }
            await #expect(throws: RecordFileError.self) { _ = try await LabSession.open(runtime: env.runtime("broken")) }
        }
        // Not JSON at all: the file, no field.
        try FileSystem.writeAtomically(path, Array("{\"name\": ".utf8))
        #expect(throws: RecordFileError.self) { _ = try LabRecordStore(name: "broken", runtimeRoot: env.runtimeRoot).read() }

        try FileSystem.writeAtomically(path, Array(Self.record(pid: "\"4242\"").utf8))
        let result = try env.qlab("snapshot", "list", "broken")
        #expect(result.status == 1, "\(result.stderr)")
        #expect(result.stderr.contains(path) && result.stderr.contains("qemu_pid"), "\(result.stderr)")
    }

    static func record(pid: String, devices: String = "[]") -> String {
        """
        {"name": "broken", "lab_file": "/nonexistent.yaml", "guest": "bare", "qemu_pid": \(pid),
         "supervisor_pid": 1, "foreground": false, "started_at": 1,
         "accel": {"accelerator": "tcg", "reason": "forged"}, "devices": \(devices), "passthrough": [],
         "qemu_log_offset": 0, "console_log_offset": 0}
        """
    }
}
