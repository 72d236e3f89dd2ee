import Foundation
import QMP
import Testing
@testable import LabCore
import Platform

/// What every `--json` document must follow (docs/json.md): it parses, keys
/// are snake_case, times are ISO 8601 UTC with milliseconds, durations
/// (`*seconds`) have at most 3 decimals.
enum JSONConventionCheck {
    /// Parses `text` and records an issue for every convention it breaks.
    @discardableResult
    static func check(_ text: String, _ command: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> JSONValue? {
        guard let value = try? JSONValue.parse(text) else {
            Issue.record("\(command) --json: not one JSON document: \(text)", sourceLocation: sourceLocation)
            return nil
        }
        let badKeys = JSONOutput.keysNotSnakeCase(in: value)
        #expect(badKeys.isEmpty, "\(command) --json: keys not snake_case: \(badKeys)", sourceLocation: sourceLocation)
        walk(value, path: command, sourceLocation: sourceLocation)
        // The printed text, not just the parsed value: no 0.12299999999999999.
        let regex = try! NSRegularExpression(pattern: #""[a-z_]*seconds": (-?[0-9.eE+-]+)"#)
        for match in regex.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
            let number = String(text[Range(match.range(at: 1), in: text)!])
            let decimals = number.split(separator: ".").dropFirst().first?.count ?? 0
            #expect(decimals <= 3 && !number.contains("e"), "\(command): duration printed as \(number)", sourceLocation: sourceLocation)
        }
        return value
    }

    static func walk(_ value: JSONValue, path: String, sourceLocation: Testing.SourceLocation) {
        switch value {
        case .object(let object):
            for (key, child) in object {
                let childPath = path + "." + key
                if key.hasSuffix("_at") {
                    if let text = child.stringValue {
                        #expect(isTimestamp(text), "\(childPath): \(text) is not ISO 8601 UTC with ms", sourceLocation: sourceLocation)
                    } else {
                        #expect(child.isNull, "\(childPath): a time must be an ISO 8601 string, not \(child)", sourceLocation: sourceLocation)
                    }
                }
                if key.hasSuffix("seconds"), let number = child.doubleValue {
                    let scaled = number * 1000
                    #expect(abs(scaled - scaled.rounded()) < 1e-6, "\(childPath): \(number) is not rounded to the ms", sourceLocation: sourceLocation)
                }
                walk(child, path: childPath, sourceLocation: sourceLocation)
            }
        case .array(let array):
            for (index, child) in array.enumerated() { walk(child, path: path + "[\(index)]", sourceLocation: sourceLocation) }
        default:
            break
        }
    }

    /// `2026-11-30T17:40:03.123Z`, and Foundation's ISO 8601 parser agrees.
    static func isTimestamp(_ text: String) -> Bool {
        guard text.range(of: #"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"#, options: .regularExpression) != nil
        else { return false }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text) != nil
    }

    /// The file's permission bits.
    static func mode(_ path: String) -> Int? {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? NSNumber)?.intValue
    }
}

@Suite("--json on every verb", .serialized)
struct JSONOutputTests {
    @Test func conventionHelpersRoundFormatAndFindBadKeys() throws {
        #expect(try JSONValue.seconds(0.1 + 0.2).jsonString() == "0.3")
        #expect(try JSONValue.seconds(12.3456789).jsonString() == "12.346")
        #expect(try JSONValue.seconds(Duration.milliseconds(1500)).jsonString() == "1.5")
        #expect(try JSONValue.double(0.123).jsonString() == "0.123", "shortest text, not %.17g")
        #expect(try JSONValue.uint(UInt64.max).jsonString() == "18446744073709551615", "big integers still pass")
        #expect(try JSONValue.array([.double(1e-7), .double(2), .uint(UInt64.max)]).jsonString() == "[1e-07,2.0,18446744073709551615]")
        #expect(try JSONValue.parse("[1e-07,2.0]") == [.double(1e-7), .double(2)])
        #expect(JSONTime.iso8601(0) == "1970-01-01T00:00:00.000Z")
        #expect(JSONTime.iso8601(1_796_060_403.1236) == "2026-11-30T17:40:03.124Z")
        #expect(JSONTime.iso8601(59.9996) == "1970-01-01T00:01:00.000Z", "rounding carries into the seconds")
        #expect(JSONTime.iso8601(-0.5) == "1969-12-31T23:59:59.500Z")
        #expect(JSONConventionCheck.isTimestamp(JSONTime.iso8601(Date().timeIntervalSince1970)))
        #expect(JSONOutput.keysNotSnakeCase(in: ["ok_1": ["a": 1, "iommuGroup": 2], "list": [["Bad": 1]], "_x": 0, "9a": 0])
            == ["ok_1.iommuGroup", "list[0].Bad", "_x", "9a"])
        #expect(JSONOutput.error(message: "no such lab x", exitCode: 3) == ["error": ["message": "no such lab x", "exit_code": 3]])
    }

    /// up, status, list, hotplug, unplug, snapshot save/list/load/delete,
    /// reset, args, down, rm and the error object, on a bare lab started paused.
    @Test func everyLabVerbPrintsConventionalJSON() async throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let lab = try fixture.bareLab()
        func json(_ arguments: String..., status: Int32 = 0, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws -> JSONValue? {
            let result = try fixture.qlab(arguments)
            #expect(result.status == status, "\(arguments.joined(separator: " ")): \(result.output)", sourceLocation: sourceLocation)
            return JSONConventionCheck.check(result.stdout, arguments.prefix(2).joined(separator: " "), sourceLocation: sourceLocation)
        }

        let up = try json("up", lab, "--paused", "--json")
        #expect(up?["name"] == "bare-dev")
        #expect(up?["vm_status"] == "prelaunch")
        #expect(try up?["qemu_pid"]?.intValue == fixture.runtime("bare-dev").record.map { Int($0.qemuPID) })
        #expect(up?["started_at_seconds"]?.doubleValue ?? 0 > 1_700_000_000)

        let status = try json("status", "bare-dev", "--json")
        #expect(status?["state"] == "paused")
        #expect(status?["started_at"] == up?["started_at"])
        #expect(status?["uptime_seconds"]?.doubleValue != nil)
        let list = try json("list", "--json")
        #expect(list?.arrayValue?.compactMap { $0["name"]?.stringValue } == ["bare-dev"])

        let hotplug = try json("hotplug", "bare-dev", "scsi-am", "--json")
        #expect(hotplug?["device"] == "scsi-am")
        #expect(hotplug?["driver"] == "am53c974")
        #expect(hotplug?["placement"]?["bus"] == "qlab-pcibr0")
        #expect(hotplug?["overlays"]?.arrayValue?.count == 1)
        #expect(hotplug?["steps"]?.arrayValue?.contains { $0["name"] == "device_add scsi-am" } == true)
        let unplug = try json("unplug", "bare-dev", "scsi-am", "--timeout", "1", "--json")
        #expect(unplug?["method"] == "reset-vm-not-running")
        #expect(unplug?["used_reset"] == true)
        #expect(unplug?["unplug_seconds"]?.doubleValue != nil)

        #expect(try fixture.qlab("hotplug", "bare-dev", "scsi-am").status == 0)
        let save = try json("snapshot", "save", "bare-dev", "t1", "--reset-fallback", "--json")
        #expect(save?["operation"] == "save")
        #expect(save?["tag"] == "t1")
        #expect(save?["detached"]?[0]?["device"] == "scsi-am")
        #expect(save?["reattached"]?[0]?["device"] == "scsi-am")
        let snapshots = try json("snapshot", "list", "bare-dev", "--json")
        #expect(snapshots?[0]?["tag"] == "t1")
        #expect(snapshots?[0]?["created_at_seconds"]?.doubleValue ?? 0 > 1_700_000_000)
        let load = try json("snapshot", "load", "bare-dev", "t1", "--json")
        #expect(load?["operation"] == "load")
        let delete = try json("snapshot", "delete", "bare-dev", "t1", "--json")
        #expect(delete?["operation"] == "delete")
        #expect(delete?["detached"]?.arrayValue?.isEmpty == true)

        let reset = try json("reset", "bare-dev", "--json")
        #expect(reset?["duration_seconds"]?.doubleValue != nil)
        let args = try json("args", lab, "--json")
        #expect(args?[0]?.stringValue?.hasSuffix("qemu-system-x86_64") == true)

        // Errors: on stderr as always, and the error object on stdout with the exit code.
        let unknownDevice = try json("hotplug", "bare-dev", "scsi-amm", "--json", status: 2)
        #expect(unknownDevice?["error"]?["exit_code"] == 2)
        #expect(unknownDevice?["error"]?["message"]?.stringValue?.contains("did you mean 'scsi-am'") == true)
        let noSuchLab = try json("status", "no-such-lab", "--json", status: ExitStatus.noSuchLab.rawValue)
        #expect(noSuchLab?["error"]?["exit_code"] == 3)
        #expect(noSuchLab?["error"]?["message"]?.stringValue?.contains("no such lab") == true)
        let usage = try json("reset", "bare-dev", "--json", "--bogus", status: ExitStatus.usage.rawValue)
        #expect(usage?["error"]?["exit_code"] == 2)
        let busy = try json("rm", "bare-dev", "--json", status: 1)
        #expect(busy?["error"]?["message"]?.stringValue?.isEmpty == false)

        let down = try json("down", "bare-dev", "--json")
        #expect(down?["outcome"] == "stopped")
        #expect(down?["method"] == "quit")
        let stopped = try json("status", "bare-dev", "--json")
        #expect(stopped?["state"] == "stopped")
        #expect(stopped?["last_exit"]?["requested"] == true)
        #expect(stopped?["last_exit"]?["ended_at"]?.stringValue.map(JSONConventionCheck.isTimestamp) == true)
        let again = try json("down", "bare-dev", "--json")
        #expect(again?["outcome"] == "not_running")
        let removed = try json("rm", "bare-dev", "--json")
        #expect(removed?["removed_anything"] == true)
        #expect(removed?["bytes"]?.intValue ?? 0 > 0)
        #expect(fixture.qemuProcesses().isEmpty)
    }

    /// doctor, devices, vfio bind --dry-run (sysfs trees), diagnose, nested list.
    @Test func hostAndOfflineVerbsPrintConventionalJSON() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let tree = try SysfsTreeBuilder.originalBench()
        let roots = ["--sysfs", tree.roots.sysfs, "--procfs", tree.roots.procfs, "--devfs", tree.roots.devfs]
        func json(_ arguments: [String], status: Int32 = 0, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws -> JSONValue? {
            let result = try env.qlab(arguments)
            #expect(result.status == status, "\(arguments.joined(separator: " ")): \(result.output)", sourceLocation: sourceLocation)
            return JSONConventionCheck.check(result.stdout, arguments.prefix(2).joined(separator: " "), sourceLocation: sourceLocation)
        }

        let doctor = try json(["doctor", "--device", "0000:03:04.0", "--json"] + roots, status: 1)
        #expect(doctor?["ok"] == false)
        #expect(doctor?["devices"]?[0]?["address"] == "0000:03:04.0")
        let plan = try json(["doctor", "--setup-plan", "--device", "0000:03:04.0", "--json"] + roots)
        #expect(plan?["kernel_options"]?.arrayValue != nil)
        let devices = try json(["devices", "--json"] + roots)
        let card = devices?.arrayValue?.first { $0["address"] == "0000:03:04.0" }
        #expect(card?["iommu_group"] == 7)
        #expect(card?["intx_masking"] != nil)
        let bind = try json(["vfio", "bind", "0000:03:04.0", "--dry-run", "--json"] + roots)
        #expect(bind?["dry_run"] == true)
        #expect(bind?["steps"]?[0]?["address"] == "0000:03:04.0")
        #expect(bind?["writes"]?.arrayValue?.contains { $0["text"] == "vfio-pci" } == true)

        let log = env.root + "/qemu.log"
        try "qemu-system-x86_64: -device vfio-pci,host=0000:03:04.0: vfio 0000:03:04.0: group 7 is not viable\n"
            .write(toFile: log, atomically: true, encoding: .utf8)
        let diagnose = try json(["diagnose", log, "--json"])
        #expect(diagnose?["diagnoses"]?.arrayValue?.isEmpty == false)
        let catalog = try json(["diagnose", "--list", "--json"])
        #expect(catalog?["rules"]?.arrayValue?.isEmpty == false)
        let scenarios = try json(["nested", "list", "--json"])
        let all = scenarios?.arrayValue ?? []
        #expect(!all.isEmpty)
        #expect(all.allSatisfy { (scenario: JSONValue) -> Bool in scenario["id"]?.stringValue != nil && scenario["proves"]?.stringValue != nil })
        let unreadable = try json(["diagnose", env.root + "/nosuch.log", "--json"], status: 2)
        #expect(unreadable?["error"]?["exit_code"] == 2)
        // `run --json FILE` (the old spelling) is a usage error now, as JSON too.
        let oldSpelling = try json(["run", env.root + "/lab.yaml", "--json", env.root + "/report.json"], status: 2)
        #expect(oldSpelling?["error"]?["message"]?.stringValue?.contains("report.json") == true)
        #expect(oldSpelling?["error"]?["message"]?.stringValue?.contains("did you mean --json-report") == true)
        #expect(!FileManager.default.fileExists(atPath: env.root + "/report.json"))
    }

    /// `report merge`: JSON on stdout by default and with --json, --json-report FILE and --junit FILE written 0644.
    @Test func reportMergeWritesReportFilesWorldReadable() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let entries = (0..<2).map { TestRunEntry(guest: "g", test: "t\($0)", repeatIndex: 1, matrixIndex: $0) }
        var shards: [String] = []
        for index in 0..<2 {
            let path = env.root + "/shard-\(index).json"
            let results = [TestResult(entry: entries[index], outcome: .passed, duration: 1.23456)]
            try FileSystem.writeJSON(path, TestReport(lab: "m", startedAt: 1_796_060_403.5, duration: 2, shards: ["\(index + 1)/2"], results: results).json)
            shards.append(path)
        }
        let merged = try env.qlab(["report", "merge"] + shards)
        #expect(merged.status == 0, "\(merged.output)")
        #expect((try? JSONValue.parse(merged.stdout))?["results"]?.arrayValue?.count == 2)
        let report = env.root + "/merged.json"
        let junit = env.root + "/merged.xml"
        let quiet = try env.qlab(["report", "merge", "--json-report", report, "--junit", junit] + shards)
        #expect(quiet.status == 0, "\(quiet.output)")
        #expect(quiet.stdout.isEmpty, "with --json-report FILE and no --json, stdout stays empty")
        #expect(JSONConventionCheck.mode(report) == 0o644)
        #expect(JSONConventionCheck.mode(junit) == 0o644)
        let both = try env.qlab(["report", "merge", "--json", "--json-report", report] + shards)
        #expect(both.status == 0)
        #expect((try? JSONValue.parse(both.stdout)) == FileSystem.readJSON(report))
        let old = try env.qlab(["report", "merge", "--json", report] + shards)
        #expect(old.status == ExitStatus.usage.rawValue || old.status == ExitStatus.failed.rawValue,
                "`--json FILE` is now the flag plus a report path to merge: \(old.output)")
    }

    /// exec and run need the test guest: exec --json carries exit status,
    /// output and duration; run --json prints the report on stdout (progress
    /// on stderr) and --json-report/--junit files are 0644.
    @Test func execAndRunPrintConventionalJSON() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("jsonguest", tests: """
              hello: {run: "echo hello", expect: hello}
            """)
        #expect(try env.qlab("up", file).status == 0)
        let exec = try env.qlab("exec", "jsonguest", "--ready", "--json", "--", "echo out; exit 3")
        #expect(exec.status == 3, "the command's exit status stays qlab's: \(exec.output)")
        let value = JSONConventionCheck.check(exec.stdout, "exec")
        #expect(value?["exit_status"] == 3)
        #expect(value?["output"]?.stringValue?.contains("out") == true)
        #expect(value?["duration_seconds"]?.doubleValue != nil)
        #expect(try env.qlab("down", "jsonguest").status == 0)

        let report = env.root + "/report.json"
        let junit = env.root + "/junit.xml"
        let run = try env.qlab("run", file, "--json", "--json-report", report, "--junit", junit)
        #expect(run.status == 0, "\(run.output)")
        // The run report's shape is docs/reports.md's (branch reports: ISO
        // `started_at` plus `started_at_seconds`, rounded durations); its keys
        // are snake_case either way, the time rules apply once it has them.
        let printed = try? JSONValue.parse(run.stdout)
        #expect(printed.map { JSONOutput.keysNotSnakeCase(in: $0) } == [], "\(run.stdout)")
        if printed?["started_at_seconds"] != nil { JSONConventionCheck.check(run.stdout, "run") }
        #expect(printed?["results"]?[0]?["outcome"] == "passed")
        #expect(run.stderr.contains("1 passed"), "progress and summary on stderr: \(run.stderr)")
        // The file names its log copies relative to its own directory (so a report folder
        // moves whole); stdout has no directory, so it names them absolute. Read back, the
        // file says the same as stdout.
        #expect(printed?["results"]?[0]?["console_log"]?.stringValue?.hasPrefix("/") == true, "\(run.stdout)")
        #expect(FileSystem.readJSON(report)?["results"]?[0]?["console_log"]?.stringValue?.hasPrefix("/") == false)
        #expect(printed == (try? TestReport(path: report))?.json)
        #expect(JSONConventionCheck.mode(report) == 0o644)
        #expect(JSONConventionCheck.mode(junit) == 0o644)
        #expect(env.qemuProcesses().isEmpty)
    }
}
