import ArgumentParser
import Foundation
import LabCore
import Platform
import QMP

struct EventsCommand: AsyncParsableCommand, JSONReporting {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Print a lab's QMP events, as the supervisor logged them.")

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
    @Flag(help: "Keep printing new events until the lab stops.") var follow = false
    @Flag(help: "One JSON object per line.") var json = false

    func run() async throws {
        let runtime: LabRuntime
        do { runtime = try LabRuntime.locateExisting(lab) } catch {
            reportError("qlab events: \(error)")
            throw exitCodeFor(error)
        }
        try await EventLog.read(runtime, follow: follow) { printEvent($0) }
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

struct ConsoleCommand: AsyncParsableCommand {
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
            reportError("qlab console: \(error)")
            throw exitCodeFor(error)
        }
        if log {
            // A record that does not decode still leaves the newest console log to show.
            let path = ((try? runtime.record) ?? nil)?.consoleLog ?? Self.latestConsoleLog(runtime)
            guard let path, let bytes = HostFiles.readBytes(path, limit: 256 << 20) else {
                reportError("qlab console: no console log for lab \(runtime.name) yet")
                throw ExitCode(1)
            }
            // Without qlab's command framing; otherwise byte-exact through a pipe, neutralised on a terminal.
            let log = ConsoleLog.withoutFraming(bytes)
            FileHandle.standardOutput.write(isatty(1) == 1 ? Data(TerminalText.neutralised(log).utf8) : Data(log))
            return
        }
        let record: LabRecord?
        do { record = try runtime.record } catch {
            reportError("qlab console: \(error)")
            throw exitCodeFor(error)
        }
        guard record != nil else {
            reportError("qlab console: \(LabError.notRunning(runtime.name))")
            throw ExitCode(ExitStatus.noSuchLab.rawValue)
        }
        let fd: Int32
        do { fd = try UnixSocket.connect(path: runtime.consoleSocketPath) } catch {
            reportError("qlab console: \(error)")
            throw ExitCode(1)
        }
        defer { close(fd) }
        reportError("connected to \(runtime.name)'s console; Ctrl-] detaches")
        TerminalConsole.relay(socket: fd)
    }

    static func latestConsoleLog(_ runtime: LabRuntime) -> String? {
        (HostFiles.list(runtime.stateDirectory) ?? [])
            .map { runtime.stateDirectory + "/" + $0 + "/console.log" }
            .filter(FileSystem.entryExists)
            .max { (FileSystem.size($0) ?? 0) < (FileSystem.size($1) ?? 0) }
    }
}

/// Copies between the terminal and a socket, raw mode while attached.
enum TerminalConsole {
    static func relay(socket fd: Int32) {
        var saved = termios()
        let isTerminal = isatty(0) == 1
        if isTerminal {
            tcgetattr(0, &saved)
            var raw = saved
            cfmakeraw(&raw)
            tcsetattr(0, TCSANOW, &raw)
        }
        defer { if isTerminal { tcsetattr(0, TCSANOW, &saved) } }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var fds = [pollfd(fd: 0, events: Int16(POLLIN), revents: 0), pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
        while true {
            if poll(&fds, 2, -1) < 0 { if errno == EINTR { continue }; break }
            if fds[0].revents != 0 {
                let n = read(0, &buffer, buffer.count)
                if n <= 0 { break }
                if isTerminal, buffer[0..<n].contains(0x1D) { break }  // Ctrl-]
                _ = buffer.withUnsafeBytes { write(fd, $0.baseAddress, n) }
            }
            if fds[1].revents != 0 {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                _ = buffer.withUnsafeBytes { write(1, $0.baseAddress, n) }
            }
        }
    }
}
