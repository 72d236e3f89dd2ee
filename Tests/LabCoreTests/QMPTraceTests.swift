import Foundation
import LabCore
import Platform
import QMP
import Testing

/// `--trace-qmp FILE` on every command, a lab's own trace (`trace_qmp: true`),
/// and `-v`/`--log-level`, against real QEMU (a lab started `--paused`).
@Suite("QMP trace and log levels (real QEMU)", .serialized)
struct QMPTraceTests {
    static func lines(_ path: String) throws -> [JSONValue] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { try JSONValue.parse(Array($0.utf8)) }
    }

    static func lab(_ env: QLabTestEnvironment, _ name: String, trace: Bool) throws -> String {
        let disk = try env.makeBlankDisk()
        return try env.writeLab(name, """
            name: \(name)
            machine: {type: q35, accel: tcg, memory: 64M}
            \(trace ? "trace_qmp: true" : "")
            guests:
              bare: {os: linux, disk: \(disk)}
            """)
    }

    @Test func everyMessageInAndOutOfACommandIsTraced() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try Self.lab(env, "traced", trace: true)
        #expect(try env.qlab("up", file, "--paused", "--trace-qmp", env.root + "/up.jsonl").status == 0)
        let qmp = try env.qlab("qmp", "traced", "query-status", "--trace-qmp=" + env.root + "/qmp.jsonl")
        #expect(qmp.status == 0, "\(qmp.output)")
        #expect(try env.qlab("status", "traced", "--trace-qmp", env.root + "/status.jsonl").status == 0)
        #expect(try env.qlab("down", "traced").status == 0)

        let trace = try Self.lines(env.root + "/qmp.jsonl")
        for line in trace {
            #expect(line["at"]?.stringValue?.hasSuffix("Z") == true)
            #expect(line["at_seconds"]?.doubleValue != nil)
            #expect(line["client"]?.stringValue?.hasPrefix("qlab qmp (pid ") == true, "\(line)")
        }
        // Greeting in, capabilities out and back, the command out and its reply in, in that order.
        let summary = trace.map { line -> String in
            let message = line["message"]!
            let direction = line["direction"]!.stringValue!
            if message["QMP"] != nil { return "\(direction) greeting" }
            if let command = message["execute"]?.stringValue { return "\(direction) \(command)#\(message["id"]!.intValue!)" }
            if message["return"] != nil { return "\(direction) return#\(message["id"]!.intValue!)" }
            return "\(direction) ?"
        }
        #expect(summary == ["in greeting", "out qmp_capabilities#0", "in return#0", "out query-status#0", "in return#0"], "\(summary)")
        #expect(trace.last?["message"]?["return"]?["status"]?.stringValue == "prelaunch")
        let mode = (try FileManager.default.attributesOfItem(atPath: env.root + "/qmp.jsonl"))[.posixPermissions] as? Int
        #expect(mode == 0o600)
        // `up` itself may send nothing (the supervisor reports QEMU's status); what it did send is its own.
        #expect(FileManager.default.fileExists(atPath: env.root + "/up.jsonl"))
        #expect(try Self.lines(env.root + "/up.jsonl").allSatisfy { $0["client"]?.stringValue?.hasPrefix("qlab up (pid ") == true })
        #expect(try Self.lines(env.root + "/status.jsonl").allSatisfy { $0["client"]?.stringValue?.hasPrefix("qlab status (pid ") == true })

        // The lab's own trace: the supervisor's monitor (events included) and every command's connection.
        let labTrace = try Self.lines(env.runtime("traced").qmpTracePath)
        let clients = Set(labTrace.compactMap { $0["client"]?.stringValue?.components(separatedBy: " (pid").first })
        #expect(clients.isSuperset(of: ["qlab-supervisor", "qlab qmp", "qlab status", "qlab down"]), "\(clients)")
        #expect(labTrace.contains {
            $0["client"]?.stringValue?.hasPrefix("qlab-supervisor") == true && $0["direction"]?.stringValue == "in"
                && $0["message"]?["event"]?.stringValue == "SHUTDOWN"
        })
        #expect(labTrace.contains { $0["direction"]?.stringValue == "out" && $0["message"]?["execute"]?.stringValue == "quit" })
    }

    @Test func aLabWithoutTraceQMPKeepsNoTrace() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try Self.lab(env, "quiet", trace: false)
        #expect(try env.qlab("up", file, "--paused").status == 0)
        #expect(try env.qlab("qmp", "quiet", "query-status").status == 0)
        #expect(try env.qlab("down", "quiet").status == 0)
        #expect(!FileManager.default.fileExists(atPath: env.runtime("quiet").qmpTracePath))
    }

    @Test func logLevelsAreQuietByDefault() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try Self.lab(env, "logs", trace: false)
        let quietUp = try env.qlab("up", file, "--paused")
        #expect(quietUp.status == 0)
        #expect(quietUp.stderr.isEmpty, "\(quietUp.stderr)")
        let quiet = try env.qlab("status", "logs")
        #expect(quiet.stderr.isEmpty, "\(quiet.stderr)")
        let debug = try env.qlab("status", "logs", "--log-level", "debug")
        #expect(debug.stderr.contains("debug qlab.cli:"), "\(debug.stderr)")
        #expect(debug.stderr.contains("debug qlab.qmp:"), "\(debug.stderr)")
        let verbose = try env.qlab("status", "-v", "logs")
        #expect(verbose.stderr.contains("debug qlab.qmp: "), "\(verbose.stderr)")
        let warning = try env.qlab("status", "logs", "--log-level=warning")
        #expect(warning.stderr.isEmpty)
        #expect(try env.qlab("down", "logs").status == 0)
        // The supervisor logs at the level qlab had when it started it; errors only otherwise.
        let supervisorLog = env.runtime("logs").supervisorLogPath
        #expect(!((try? String(contentsOfFile: supervisorLog, encoding: .utf8)) ?? "").contains("qlab.supervision"))
        #expect(try env.qlab("up", file, "--paused", "-v").status == 0)
        #expect(try env.qlab("down", "logs").status == 0)
        let log = (try? String(contentsOfFile: supervisorLog, encoding: .utf8)) ?? ""
        #expect(log.contains("info qlab.supervision:") && log.contains("QEMU ready"), "\(log)")

        // Bad values are usage errors.
        let badLevel = try env.qlab("status", "--log-level", "loud")
        #expect(badLevel.status == 2)
        #expect(badLevel.stderr.contains("'loud' is invalid for '--log-level"), "\(badLevel.stderr)")
        #expect(["trace", "debug", "info", "critical"].allSatisfy { badLevel.stderr.contains("- \($0)") }, "the levels are listed: \(badLevel.stderr)")
        #expect(badLevel.stderr.contains("Usage: qlab status "), "\(badLevel.stderr)")
        #expect(try env.qlab("status", "--trace-qmp").status == 2)
        let noDirectory = try env.qlab("status", "--trace-qmp", env.root + "/no/such/dir/t.jsonl")
        #expect(noDirectory.status == 2)
        #expect(noDirectory.stderr.contains("no/such/dir/t.jsonl"), "\(noDirectory.stderr)")
        // A command's own --verbose keeps its meaning (nested list: what each scenario proves).
        let plain = try env.qlab("nested", "list")
        let detailed = try env.qlab("nested", "list", "-v")
        #expect(plain.status == 0 && detailed.status == 0)
        #expect(detailed.stdout.count > plain.stdout.count, "\(detailed.stdout)")
    }

}
