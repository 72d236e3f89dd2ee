import ArgumentParser
import Foundation
import LabCore
import QMP

/// `qlab qmp (--socket PATH | LAB) COMMAND [JSON-ARGUMENTS]`
struct QMPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qmp",
        abstract: "Execute one QMP command and print its return value as JSON.",
        discussion: """
            Connects, negotiates capabilities, executes COMMAND with the JSON object ARGUMENTS, \
            and prints the return value on stdout. A QMP error goes to stderr with its class; exit 1. \
            Control characters in QEMU's text are shown escaped (\\u009b), which keeps the JSON valid.
            Examples:
              qlab qmp --socket /run/qlab/demo/qmp.sock query-status
              qlab qmp demo device_del '{"id": "scsi0"}'
            """)

    @Option(name: .long, help: "QMP Unix socket of a QEMU not started by qlab.")
    var socket: String?

    @Option(name: .long, help: "Reply timeout in seconds (default: by command).")
    var timeout: Double?

    @Flag(name: .long, help: "Pretty-print the reply.")
    var pretty = false

    @Argument(help: "LAB (name or lab file) when --socket is not given, then COMMAND [JSON-ARGUMENTS].")
    var words: [String]

    func run() async throws {
        let replyTimeout = try timeout.map { try checkedSeconds($0, option: "--timeout", command: "qmp") }
        var words = words
        let socketPath: String
        // A lab with `trace_qmp: true` gets this command's messages in its trace too.
        var labTracer: (any QMPTracer)?
        if let socket {
            socketPath = socket
        } else {
            guard words.count >= 2 else {
                throw ValidationError("give --socket PATH or a LAB before the command")
            }
            do {
                let runtime = try LabRuntime.locateExisting(words.removeFirst())
                guard try runtime.record != nil else { throw LabError.notRunning(runtime.name) }
                socketPath = runtime.qmpSocketPath
                labTracer = runtime.tracesQMP ? runtime.labTracer() : nil
            } catch {
                reportError("qlab qmp: \(error)")
                throw exitCodeFor(error)
            }
        }
        guard let command = words.first, words.count <= 2 else {
            throw ValidationError("expected COMMAND [JSON-ARGUMENTS]")
        }
        var arguments: JSONObject?
        if words.count == 2 {
            do {
                guard case .object(let object) = try JSONValue.parse(words[1]) else {
                    throw ValidationError("JSON-ARGUMENTS must be a JSON object, e.g. '{\"id\": \"scsi0\"}'")
                }
                arguments = object
            } catch let error as JSONParseError {
                throw ValidationError("JSON-ARGUMENTS is not valid JSON: \(error)")
            }
        }
        do {
            let client = try await QMPClient.connect(path: socketPath, tracer: labTracer)
            defer { client.close() }
            let reply = try await client.execute(command, arguments: arguments, timeout: replyTimeout)
            print(TerminalText.neutralised(try reply.jsonString(pretty: pretty)))
        } catch let error as QMPError {
            if case .command(_, let errorClass, let description) = error {
                reportError("qlab qmp: \(command): \(errorClass): \(description)")
                // The diagnosis catalog applies to QMP errors too (e.g. a vfio device_add).
                for diagnosis in Diagnoser.diagnose(description) { reportError("\n" + diagnosis.text) }
            } else {
                reportError("qlab qmp: \(error)")
            }
            throw exitCodeFor(error)
        }
    }
}
