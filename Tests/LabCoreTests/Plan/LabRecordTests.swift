import Testing
@testable import LabCore
import Platform
import QMP

@Suite("Lab records")
struct LabRecordTests {
    static func sample() -> LabRecord {
        LabRecord(
            name: "rec", labFile: "/labs/rec.yaml", guest: "linux", qemuPID: 42, supervisorPID: 41, foreground: false,
            startedAt: 1.5, accel: AccelDecision(.tcg, reason: "test"), consoleLog: "/state/console.log",
            devices: [("a", .boot), ("b", .hotplug), ("c", .detached)], passthroughHosts: [("p", "0000:01:00.0")],
            qemuLogOffset: 7, consoleLogOffset: 9)
    }

    /// Device states are kept as the enum, written as their names, and read back.
    @Test func deviceStatesRoundTrip() throws {
        let json = Self.sample().json
        #expect(json["devices"]?.arrayValue?.compactMap { $0["state"]?.stringValue } == ["boot", "hotplug", "detached"])
        let back = try #require(LabRecord(try JSONValue.parse(json.jsonString(pretty: false))))
        #expect(back.devices.map(\.state) == [.boot, .hotplug, .detached])
        #expect(back.devices.map(\.name) == ["a", "b", "c"])
        #expect(back.labFile == "/labs/rec.yaml")
        #expect(back.passthroughHosts.map(\.host) == ["0000:01:00.0"])
    }

    /// A record without its lab file is refused, not read with an empty path.
    @Test func recordWithoutLabFileIsRefused() throws {
        guard case .object(var object) = Self.sample().json else { Issue.record("not an object"); return }
        object["lab_file"] = nil
        #expect(LabRecord(.object(object)) == nil)
        object["lab_file"] = .string("")
        #expect(LabRecord(.object(object)) == nil)
    }
}

extension LabRecordTests {
    /// The plan's part of the record (lab text, capabilities, argv) round-trips,
    /// and the lab comes back from the kept text, not from the file.
    @Test func planPartRoundTripsAndTheLabComesFromTheRecord() throws {
        var record = Self.sample()
        record.labFile = "/nonexistent-dir/rec.yaml"
        record.labSource = "name: rec\nguests:\n  linux: {os: linux, kernel: vmlinuz}\n"
        record.capabilities = QEMUCapabilities(rombar: .onOff)
        record.argv = ["qemu-system-x86_64", "-name", "rec"]
        let back = try #require(LabRecord(try JSONValue.parse(record.json.jsonString(pretty: false))))
        #expect(back.labSource == record.labSource)
        #expect(back.capabilities == QEMUCapabilities(rombar: .onOff))
        #expect(back.argv == record.argv)
        let lab = try back.lab()
        #expect(lab.name == "rec")
        #expect(lab.guests.first?.kernel == "/nonexistent-dir/vmlinuz")
    }
}

extension LabRecordTests {
    /// `last-exit.json` keeps its shape (exit_code or signal + signal_name,
    /// description, diagnoses) and reads back the same.
    @Test func exitRecordsRoundTrip() throws {
        let diagnosis = Diagnosis(id: "vfio-intx-busy", device: "0000:03:05.0", summary: "s", cause: "c", fix: "f")
        for exit in [ProcessExit.exited(1), .signaled(9), nil] {
            let record = ExitRecord(exit: exit, at: 2.5, requested: exit == nil, qemuOutput: "out", diagnoses: [diagnosis])
            let json = try JSONValue.parse(record.json.jsonString(pretty: false))
            switch exit {
            case .exited(let code)?: #expect(json["exit_code"] == JSONValue(code))
            case .signaled(let signal)?:
                #expect(json["signal"] == JSONValue(signal))
                #expect(json["signal_name"]?.stringValue == "SIGKILL")
            case nil: #expect(json["exit_code"] == .null)
            }
            #expect(json["description"]?.stringValue == record.exitDescription)
            #expect(json["diagnoses"]?[0]?["device"]?.stringValue == "0000:03:05.0")
            let back = try #require(ExitRecord(json))
            #expect(back.exit == record.exit)
            #expect(back.at == 2.5 && back.requested == record.requested && back.qemuOutput == "out")
            #expect(back.diagnoses == [diagnosis])
        }
    }
}
