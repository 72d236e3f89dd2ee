import Foundation
import LabCore
import Platform
import QMP
import Testing

/// `launch.json` and `lab-file.json` through JSONValueEncoder/Decoder (issue 11).
@Suite("Launch spec coding (issue 11)")
struct LaunchSpecCodingTests {
    static func spec() -> LaunchSpec {
        var record = LabRecord(
            name: "spec", labFile: "/labs/spec.yaml", guest: "linux", qemuPID: 0, supervisorPID: 0, foreground: false,
            startedAt: 3.25, accel: AccelDecision(.tcg, reason: "test"), consoleLog: nil,
            devices: [("a", .boot), ("b", .hotplug)], passthroughHosts: [], qemuLogOffset: 0)
        record.argv = ["qemu-system-x86_64", "-name", "spec"]
        return LaunchSpec(argv: record.argv, record: record, runtimeRoot: "/run/q", stateRoot: "/state/q")
    }

    /// The keys stay snake_case, as launch.json always had them, and the spec reads back the same.
    @Test func aLaunchSpecRoundTrips() throws {
        let spec = Self.spec()
        let json = try JSONValue.parse(try JSONValueEncoder().encode(spec).serialized(pretty: false))
        guard case .object(let object) = json else { Issue.record("not an object: \(json)"); return }
        #expect(object.keys.sorted() == ["argv", "record", "runtime_root", "state_root"])
        #expect(json["record"]?["lab_file"]?.stringValue == "/labs/spec.yaml")
        #expect(json["record"]?["devices"]?[1]?["state"]?.stringValue == "hotplug")
        let back = try JSONValueDecoder().decode(LaunchSpec.self, from: json)
        #expect(back.argv == spec.argv)
        #expect(back.runtimeRoot == "/run/q" && back.stateRoot == "/state/q")
        #expect(back.record.name == "spec" && back.record.startedAt == 3.25)
        #expect(back.record.devices == spec.record.devices)
    }

    /// A launch.json that does not decode: the supervisor's error names the file and the field.
    @Test func aBadLaunchSpecNamesTheFileAndTheField() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let runtime = env.runtime("spec")
        try runtime.makeDirectories()
        let good = try JSONValueEncoder().encode(Self.spec())
        guard case .object(let object) = good else { Issue.record("not an object"); return }
        func write(_ change: (inout JSONObject) -> Void) throws {
            var changed = object
            change(&changed)
            try FileSystem.writeAtomically(runtime.launchSpecPath, try JSONValue.object(changed).serialized(pretty: true))
        }
        let cases: [(field: String, change: (inout JSONObject) -> Void)] = [
            ("argv", { $0["argv"] = .array([]) }),
            ("state_root", { $0["state_root"] = nil }),
            ("record.qemu_pid", { object in
                guard case .object(var record)? = object["record"] else { return }
                record["qemu_pid"] = .string("many")
                object["record"] = .object(record)
            }),
        ]
        for (field, change) in cases {
            try write(change)
            do {
                _ = try LaunchSpec.read(path: runtime.launchSpecPath)
                Issue.record("a launch spec with a bad \(field) was read")
            } catch let error as RecordFileError {
                #expect(error.path == runtime.launchSpecPath)
                #expect(error.field == field, "\(error)")
            }
        }
        try write { _ in }
        #expect(try LaunchSpec.read(path: runtime.launchSpecPath).argv == Self.spec().argv)
    }

    /// lab-file.json keeps `{"lab_file": ...}`; a bad one names its field.
    @Test func theLastLabFileRecordRoundTrips() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let runtime = env.runtime("spec")
        try runtime.writeLastLabFile("/labs/spec.yaml")
        let json = try JSONValue.parse(try #require(HostFiles.readBytes(runtime.labFileRecordPath)))
        #expect(json == ["lab_file": "/labs/spec.yaml"])
        #expect(runtime.lastLabFile == "/labs/spec.yaml")
        try FileSystem.writeAtomically(runtime.labFileRecordPath, Array(#"{"lab_file": 7}"#.utf8))
        #expect(runtime.lastLabFile == nil)
        #expect {
            _ = try runtime.readLastLabFile()
        } throws: { error in
            (error as? RecordFileError)?.field == "lab_file"
        }
    }
}
