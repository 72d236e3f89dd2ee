import ArgumentParser
import Foundation
import LabCore
import Platform
import QMP

/// `qlab hmp LAB COMMAND-LINE...`: one human monitor command, its reply as text.
struct HMPCommand: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "hmp",
        abstract: "Run one human monitor (HMP) command in a lab's QEMU and print its reply as text.",
        discussion: """
            The words after LAB are joined with spaces into the command line and sent as QMP's \
            human-monitor-command; the reply is printed as QEMU wrote it, one line per line \
            (QEMU's \\r\\n become \\n; control characters shown escaped on a terminal). HMP says \
            an error as text too (`unknown command`), so the exit status is 0 whenever QEMU \
            answered. --json prints the reply as a JSON string instead.
            Example:
              qlab hmp demo info pci
            """)

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
    @Option(name: .long, help: "Reply timeout in seconds (default: by command).") var timeout: Double?
    @Flag(help: "Print the reply as a JSON string.") var json = false
    @Argument(help: "The HMP command line, e.g. info pci.") var commandLine: [String]

    func validate() throws {
        if let timeout { _ = try checkedSeconds(timeout, option: "--timeout") }
        guard !commandLine.isEmpty else { throw ValidationError("no HMP command: give one after LAB, e.g. qlab hmp LAB info pci") }
    }

    func run() async throws {
        let replyTimeout = try timeout.map { try checkedSeconds($0, option: "--timeout") }
        let line = commandLine.joined(separator: " ")
        let reply: JSONValue
        do {
            let runtime = try LabRuntime.locateExisting(lab)
            guard try runtime.record != nil else { throw LabError.notRunning(runtime.name) }
            let client = try await QMPClient.connect(path: runtime.qmpSocketPath, tracer: runtime.tracesQMP ? runtime.labTracer() : nil)
            defer { client.close() }
            reply = try await client.execute("human-monitor-command", arguments: ["command-line": .string(line)], timeout: replyTimeout)
        } catch {
            throw Reported("hmp", error)
        }
        if json { return try printJSON(reply) }
        let text = Self.text(of: reply)
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    /// HMP's reply as lines: `\r\n` made `\n`, a last newline when there is
    /// text; neutralised on a terminal, as received otherwise.
    static func text(of reply: JSONValue) -> String {
        var text = (reply.stringValue ?? "").replacingOccurrences(of: "\r\n", with: "\n")
        if !text.isEmpty && !text.hasSuffix("\n") { text += "\n" }
        return ThisProcess.isTerminal(.standardOutput) ? TerminalText.neutralised(text) : text
    }
}
