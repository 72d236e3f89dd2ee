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

    /// `--trace-qmp FILE` appends only to a regular file of the caller's own that
    /// nobody else may read or write; anything else is refused (exit 2), untouched.
    @Test func aTraceFileNotTheCallersOwnIsRefused() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        func refused(_ path: String, _ words: String) throws {
            let result = try env.qlab("list", "--trace-qmp", path)
            #expect(result.status == ExitStatus.usage.rawValue, "\(path): \(result.output)")
            #expect(result.stderr.contains(words), "\(path): \(result.stderr)")
        }
        // Another user's file, as one left in a shared /tmp (root can make one: chown to nobody).
        let theirs = env.root + "/theirs.jsonl"
        try #require(FileManager.default.createFile(atPath: theirs, contents: nil, attributes: [.posixPermissions: 0o600]))
        if chown(theirs, 65534, 65534) == 0 {
            try refused(theirs, "refused \(theirs): owned by uid 65534")
            #expect(FileSystem.size(theirs) == 0)
        }
        // The caller's own file that others may read or write (0666, 0640).
        for mode in [0o666, 0o640] {
            let open = env.root + "/open-\(String(mode, radix: 8)).jsonl"
            try #require(FileManager.default.createFile(atPath: open, contents: nil))
            try #require(chmod(open, mode_t(mode)) == 0)
            try refused(open, "mode 0\(String(mode, radix: 8)) lets others read or write it")
            #expect(FileSystem.size(open) == 0)
        }
        // Not a regular file; a link (refused before).
        try #require(mkfifo(env.root + "/fifo", 0o600) == 0)
        try refused(env.root + "/fifo", "not a regular file")
        try FileManager.default.createSymbolicLink(atPath: env.root + "/link.jsonl", withDestinationPath: env.root + "/mine.jsonl")
        try refused(env.root + "/link.jsonl", "a symbolic link")
        // The caller's own 0600 file is appended to.
        let mine = env.root + "/mine.jsonl"
        try #require(FileManager.default.createFile(atPath: mine, contents: Data("{}\n".utf8), attributes: [.posixPermissions: 0o600]))
        #expect(try env.qlab("list", "--trace-qmp", mine).status == 0)
        #expect(try String(contentsOfFile: mine, encoding: .utf8) == "{}\n", "list opens no QMP connection: nothing appended")
    }

    /// Secrets sent to a real QEMU do not reach the trace (the command's nor the
    /// lab's): a `secret` object's data, VNC and display passwords. QEMU got them.
    @Test func secretValuesAreMaskedInTraces() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try Self.lab(env, "secrets", trace: true)
        #expect(try env.qlab("up", file, "--paused").status == 0)
        let trace = env.root + "/secrets.jsonl"
        let added = try env.qlab("qmp", "secrets", "object-add", #"{"qom-type": "secret", "id": "sec0", "data": "hunter2-object"}"#, "--trace-qmp", trace)
        #expect(added.status == 0, "\(added.output)")
        // A block driver names the secret by id (password-secret): the id is no secret, its data is masked above.
        let properties = try env.qlab("qmp", "secrets", "qom-list", #"{"path": "/objects/sec0"}"#)
        #expect(properties.status == 0 && properties.stdout.contains("\"data\""), "QEMU has the secret object: \(properties.output)")
        // No VNC display: QEMU refuses these, but the messages went out with the passwords in them.
        _ = try env.qlab("qmp", "secrets", "set_password", #"{"protocol": "vnc", "password": "hunter3-display"}"#, "--trace-qmp", trace)
        _ = try env.qlab("qmp", "secrets", "change-vnc-password", #"{"password": "hunter4-vnc"}"#, "--trace-qmp", trace)
        #expect(try env.qlab("down", "secrets").status == 0)

        for path in [trace, env.runtime("secrets").qmpTracePath] {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            #expect(!text.contains("hunter"), "\(path)")
            let sent = try Self.lines(path).compactMap { line -> JSONValue? in
                line["direction"]?.stringValue == "out" ? line["message"] : nil
            }
            let objectAdd = try #require(sent.first { $0["execute"]?.stringValue == "object-add" }, "\(path)")
            #expect(objectAdd["arguments"] == ["qom-type": "secret", "id": "sec0", "data": "<masked>"])
            #expect(sent.first { $0["execute"]?.stringValue == "set_password" }?["arguments"] == ["protocol": "vnc", "password": "<masked>"])
            #expect(sent.first { $0["execute"]?.stringValue == "change-vnc-password" }?["arguments"] == ["password": "<masked>"])
        }
    }

    /// The masking walks the message: what it masks and what it leaves.
    @Test func maskingWalksTheMessage() throws {
        func masked(_ text: String) throws -> JSONValue { QMPTraceMasking.masked(try JSONValue.parse(text)) }
        // The form before QEMU 6.0 (props), and exec-oob.
        #expect(try masked(#"{"execute": "object-add", "arguments": {"qom-type": "secret", "id": "s", "props": {"data": "x", "format": "base64"}}}"#)
            == (try JSONValue.parse(#"{"execute": "object-add", "arguments": {"qom-type": "secret", "id": "s", "props": {"data": "<masked>", "format": "base64"}}}"#)))
        #expect(try masked(#"{"exec-oob": "set_password", "arguments": {"protocol": "spice", "password": "x"}}"#)["arguments"]?["password"] == "<masked>")
        // A password at any depth (a block driver's options), in an array too.
        #expect(try masked(#"{"execute": "blockdev-add", "arguments": {"driver": "x", "server": [{"password": "p", "host": "h"}]}}"#)["arguments"]?["server"]?[0]
            == ["password": "<masked>", "host": "h"])
        // Not secrets: another object's data, a password-secret id, replies and events, a null password.
        let other = #"{"execute": "object-add", "arguments": {"qom-type": "rng-builtin", "id": "r", "data": "kept"}}"#
        #expect(try masked(other) == (try JSONValue.parse(other)))
        let byID = #"{"execute": "blockdev-add", "arguments": {"driver": "curl", "password-secret": "sec0"}}"#
        #expect(try masked(byID) == (try JSONValue.parse(byID)))
        let reply = #"{"return": {"password": "not a command"}}"#
        #expect(try masked(reply) == (try JSONValue.parse(reply)))
        let none = #"{"execute": "x", "arguments": {"password": null}}"#
        #expect(try masked(none) == (try JSONValue.parse(none)))
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
        #expect(badLevel.stderr.contains("--log-level loud: use trace, debug, info"), "\(badLevel.stderr)")
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
