import Foundation
import LabCore
import QMP
import Testing

/// The test guest's SCSI settings and rescan helper: what docs/devices-snapshots.md
/// ("Where the rescan goes") documents is what the image and the example lab use, and the
/// helper finds disks both ways it can (the kernel's own hotplug path, its fallback rescan).
@Suite("Guest SCSI rescan", .serialized)
struct GuestRescanTests {
    /// The `key: value` lines of the doc's ```text block that starts with `test guest:`.
    static func documented() throws -> [String: String] {
        let text = try String(contentsOfFile: QLabTestEnvironment.repositoryRoot + "/docs/devices-snapshots.md", encoding: .utf8)
        for block in text.components(separatedBy: "```text\n").dropFirst() where block.hasPrefix("test guest:") {
            guard let end = block.range(of: "\n```") else { continue }
            var fields: [String: String] = [:]
            for line in block[..<end.lowerBound].split(separator: "\n") {
                guard let colon = line.range(of: ": ") else { continue }
                fields[String(line[..<colon.lowerBound])] = String(line[colon.upperBound...])
            }
            return fields
        }
        Issue.record("docs/devices-snapshots.md has no ```text block starting with `test guest:`")
        throw CancellationError()
    }

    /// `MODULE.PARAM=VALUE` for every `QLAB_MODPARAMS_MODULE="PARAM=VALUE ..."` line of images/init/guest-init.
    static func imageModuleParameters() throws -> Set<String> {
        let text = try String(contentsOfFile: QLabTestEnvironment.repositoryRoot + "/images/init/guest-init", encoding: .utf8)
        var result: Set<String> = []
        for line in text.split(separator: "\n") where line.hasPrefix("QLAB_MODPARAMS_") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            let module = line[line.index(line.startIndex, offsetBy: "QLAB_MODPARAMS_".count)..<equals]
            let values = line[line.index(after: equals)...].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            for value in values.split(separator: " ") { result.insert("\(module).\(value)") }
        }
        return result
    }

    @Test func documentedSettingsAreTheImagesAndTheExampleLabs() throws {
        let doc = try Self.documented()
        let parameters = try #require(doc["test guest"])
        #expect(Set(parameters.split(separator: " ").map(String.init)) == (try Self.imageModuleParameters()))
        let lab = try Lab.load(path: QLabTestEnvironment.repositoryRoot + "/labs/emulated-scsi.yaml")
        let guest = try #require(lab.guest(named: "linux"))
        #expect(doc["example lab rescan"] == guest.effectiveRescan)
        // The lab's kernel command line sets none of them back to the slow defaults.
        #expect(!(guest.append ?? "").contains("settle"))
    }

    /// A card hotplugged into the running guest is probed and scanned by the kernel itself
    /// (ACPI hotplug): `qlab-scsi-scan -w` lists its disk. A disk added to a controller the
    /// guest already has sends no event: only the helper's fallback rescan finds it. A count
    /// never reached ends in exit 1 and says so.
    @Test func helperFindsHotpluggedAndSilentlyAddedDisks() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("rescan", tests: "  none: {run: \"true\"}")
        _ = try await env.controller.up(labFile: file, options: .init())
        let session = try await LabSession.open(runtime: env.runtime("rescan"))
        defer { session.close() }
        let console = try GuestConsole.connect(runtime: env.runtime("rescan"))
        defer { console.close() }
        try await console.waitForReady(try session.guest)

        let scanMode = try await console.run("cat /sys/module/scsi_mod/parameters/scan", timeout: .seconds(30))
        #expect(scanMode.output.trimmingCharacters(in: .whitespacesAndNewlines) == "sync")

        _ = try await session.attach("scsi-lsi")
        let first = try await console.run("qlab-scsi-scan -w 20 -n 1", timeout: .seconds(60))
        #expect(first.exitStatus == 0, "\(first.output)")
        #expect(first.output.contains("driver=sym53c8xx"), "\(first.output)")
        #expect(first.output.split(separator: "\n").filter { $0.hasPrefix("hctl=") }.count == 1, "\(first.output)")

        // A second disk (target 1) on the controller the guest already has.
        let target = QLabTestEnvironment.imagesOut + "/scsi-target.qcow2"
        _ = try await session.qmp.execute("blockdev-add", arguments: [
            "driver": "qcow2", "node-name": "extra-fmt", "read-only": true,
            "file": ["driver": "file", "node-name": "extra-file", "filename": .string(target), "read-only": true],
        ])
        try await session.qmp.deviceAdd(driver: "scsi-hd", id: "extra", properties: ["drive": "extra-fmt", "bus": "scsi-lsi.0", "scsi-id": 1])
        let before = try await console.run("ls /sys/class/scsi_disk | wc -l", timeout: .seconds(30))
        #expect(before.output.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "the guest found the silent disk by itself: \(before.output)")
        let second = try await console.run("qlab-scsi-scan -w 20 -n 2", timeout: .seconds(60))
        #expect(second.exitStatus == 0, "\(second.output)")
        let lines = second.output.split(separator: "\n").filter { $0.hasPrefix("hctl=") }
        #expect(lines.count == 2, "\(second.output)")
        #expect(lines.contains { $0.contains(":0:1:0 ") && $0.contains("driver=sym53c8xx") }, "\(second.output)")

        let short = try await console.run("qlab-scsi-scan -w 2 -n 5", timeout: .seconds(60))
        #expect(short.exitStatus == 1, "\(short.output)")
        #expect(short.output.contains("qlab-scsi-scan: fewer than 5 disk(s) after 2s"), "\(short.output)")
    }
}
