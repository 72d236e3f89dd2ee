import ArgumentParser
import Foundation
import LabCore
import Platform
import QMP

struct EventsCommand: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Print a lab's QMP events, as the supervisor logged them.",
        discussion: """
            The log keeps every boot's events until `qlab rm`. Without --follow, all of them are \
            printed (--since: from a time on). --follow prints the events that come from now on \
            (--since TIME or --all: history first) until the lab stops, and exits as soon as its \
            reader goes away (`qlab events LAB --follow | grep -m1 DEVICE_DELETED`).
            """)

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
    @Flag(help: "Keep printing new events until the lab stops (from now on, unless --since or --all).") var follow = false
    @Option(help: ArgumentHelp("Only events at or after TIME: ISO 8601 (2026-12-07T05:00:00Z) or a duration ago (10m, 1h30m).", valueName: "TIME"))
    var since: String?
    @Flag(help: "With --follow: print the whole log (earlier boots' events too) before the new events.") var all = false
    @Flag(help: "One JSON object per line.") var json = false

    func validate() throws {
        if since != nil && all { throw ValidationError("--since and --all both say where to start: give one") }
        if let since, Self.sinceTime(since) == nil {
            throw ValidationError("--since '\(since)': give an ISO 8601 time (2026-12-07T05:00:00Z) or a duration ago (10m, 1h30m)")
        }
    }

    /// `--since`'s time in seconds since the epoch: an ISO 8601 time, or now less a duration.
    static func sinceTime(_ text: String, now: Date = Date()) -> Double? {
        if let duration = LabDuration.parse(text) { return now.timeIntervalSince1970 - duration.inSeconds }
        if let date = try? Date(text, strategy: .iso8601) { return date.timeIntervalSince1970 }
        return nil
    }

    func run() async throws {
        let runtime: LabRuntime
        do { runtime = try LabRuntime.locateExisting(lab) } catch {
            throw Reported("events", error)
        }
        let start: EventLog.Start = since.flatMap { Self.sinceTime($0) }.map { .since($0) } ?? (follow && !all ? .now : .all)
        try await EventLog.read(runtime, follow: follow, from: start, reader: .standardOutput) { printEvent($0) }
    }

    func printEvent(_ line: [UInt8]) {
        if json {
            print(TerminalText.neutralised(line))
            return
        }
        guard let value = try? JSONValue.parse(line), let name = value["event"]?.stringValue else { return }
        let time = value["time"]?.doubleValue.map { Date(timeIntervalSince1970: $0).formatted(.iso8601) } ?? "?"
        let data = value["data"].flatMap { $0.isNull ? nil : (try? $0.jsonString()) } ?? ""
        print(TerminalText.neutralised("\(time) \(name) \(data)", keepingLines: false))
    }
}

struct ConsoleCommand: AsyncParsableCommand, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "console", abstract: "Attach to a lab's serial console (Ctrl-] detaches), or print its log.",
        discussion: """
            Attached, the terminal is a raw pass-through: the guest's bytes reach it unaltered, \
            escape sequences included, as with any serial console; attach only to guests you trust \
            with your terminal. --log leaves out qlab's command framing (the __QLAB_ marker lines \
            and the echoed commands that print them), shows control characters escaped (\\x1b) \
            on a terminal and writes the rest byte for byte to a pipe or file.
            """)

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
    @Flag(help: "Print what the console has captured and exit.") var log = false

    func run() async throws {
        let runtime: LabRuntime
        do { runtime = try LabRuntime.locateExisting(lab) } catch {
            throw Reported("console", error)
        }
        if log {
            // A record that does not decode still leaves the newest console log to show.
            let path = ((try? runtime.record) ?? nil)?.consoleLog ?? Self.latestConsoleLog(runtime)
            guard let path, let bytes = HostFiles.readBytes(path, limit: 256 << 20) else {
                reportError("qlab console: no console log for lab \(runtime.name) yet")
                throw Reported(.failed)
            }
            // Without qlab's command framing; otherwise byte-exact through a pipe, neutralised on a terminal.
            let log = ConsoleLog.withoutFraming(bytes)
            FileHandle.standardOutput.write(ThisProcess.isTerminal(.standardOutput) ? Data(TerminalText.neutralised(log).utf8) : Data(log))
            return
        }
        let record: LabRecord?
        do { record = try runtime.record } catch {
            throw Reported("console", error)
        }
        guard record != nil else { throw Reported("console", LabError.notRunning(runtime.name)) }
        let socket: FileDescriptor
        do { socket = FileDescriptor(rawValue: try UnixSocket.connect(path: runtime.consoleSocketPath)) } catch {
            throw Reported("console", error)
        }
        defer { socket.closeIgnoringErrors() }
        reportError("connected to \(runtime.name)'s console; Ctrl-] detaches")
        // Off the cooperative pool: the relay blocks in poll(2) on its own thread.
        do { try await TerminalRelay.run(socket: socket) } catch {
            throw Reported("console", error)
        }
    }

    static func latestConsoleLog(_ runtime: LabRuntime) -> String? {
        (HostFiles.list(runtime.stateDirectory) ?? [])
            .map { runtime.stateDirectory + "/" + $0 + "/console.log" }
            .filter(FileSystem.entryExists)
            .max { (FileSystem.size($0) ?? 0) < (FileSystem.size($1) ?? 0) }
    }
}
