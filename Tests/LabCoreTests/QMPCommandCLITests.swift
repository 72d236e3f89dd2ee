import Foundation
import LabCore
import Platform
import QMP
import Testing

/// `qlab qmp` against a scripted QMP peer on a Unix socket: what a hostile
/// or broken QEMU can make it print.
@Suite("qlab qmp against a fake peer")
struct QMPCommandCLITests {
    /// Serves one client on `path`: greeting, capabilities, then `answer` to the command.
    static func serveOnce(path: String, answer: @escaping @Sendable (JSONValue) -> String) throws -> Thread {
        let listener = try UnixSocket.listen(path: path)
        let thread = Thread {
            defer { close(listener) }
            guard let fd = try? UnixSocket.accept(listener) else { return }
            defer { close(fd) }
            var buffered: [UInt8] = []
            func readMessage() -> JSONValue? {
                while true {
                    if let newline = buffered.firstIndex(of: 0x0A) {
                        let line = Array(buffered[..<newline])
                        buffered.removeFirst(newline + 1)
                        return try? JSONValue.parse(line)
                    }
                    var chunk = [UInt8](repeating: 0, count: 4096)
                    let n = read(fd, &chunk, chunk.count)
                    if n <= 0 { return nil }
                    buffered += chunk[0..<n]
                }
            }
            func send(_ text: String) { _ = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
            send(#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}"# + "\r\n")
            guard let negotiate = readMessage() else { return }
            send(#"{"return": {}, "id": \#(negotiate["id"] ?? .null)}"# + "\r\n")
            guard let command = readMessage() else { return }
            send(answer(command) + "\r\n")
            _ = readMessage()  // until qlab hangs up
        }
        thread.start()
        return thread
    }

    @Test func aQMPErrorWithAnEscapeSequenceIsPrintedNeutralised() throws {
        let dir = try LabTempDirectory("qmp-cli")
        defer { dir.remove() }
        let socket = dir.path + "/qmp.sock"
        // desc holds ESC [2J (clear screen) and an OSC title change, JSON-escaped on the wire as QEMU would.
        _ = try Self.serveOnce(path: socket) { command in
            #"{"error": {"class": "GenericError", "desc": "bad \u001b[2J\u001b]0;pwned\u0007 \u009b1m"}, "id": \#(command["id"] ?? .null)}"#
        }
        let result = try CommandLineCLITests.run(["qmp", "--socket", socket, "query-status"])
        #expect(result.status == 1)
        #expect(result.err.contains(#"qlab qmp: query-status: GenericError: bad \x1b[2J\x1b]0;pwned\x07 \u009b1m"#), "\(result.err)")
        #expect(!result.err.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" })
        #expect(!result.err.unicodeScalars.contains("\u{9B}"))
    }

    @Test func aReplyWithControlCharactersStaysValidJSON() throws {
        let dir = try LabTempDirectory("qmp-cli")
        defer { dir.remove() }
        let socket = dir.path + "/qmp.sock"
        _ = try Self.serveOnce(path: socket) { command in
            #"{"return": {"name": "x\u009b2Jy\u007f"}, "id": \#(command["id"] ?? .null)}"#
        }
        let result = try CommandLineCLITests.run(["qmp", "--socket", socket, "query-name"])
        #expect(result.status == 0, "\(result.err)")
        #expect(!result.out.unicodeScalars.contains("\u{9B}"))
        // Same value when read back as JSON.
        let reply = try JSONValue.parse(result.out.trimmingCharacters(in: .newlines))
        #expect(reply["name"]?.stringValue == "x\u{9B}2Jy\u{7F}")
    }

    /// A reply that never comes is the command's own timeout: exit 124 (the exit-code table).
    @Test func aReplyThatNeverComesExits124() throws {
        let dir = try LabTempDirectory("qmp-cli")
        defer { dir.remove() }
        let socket = dir.path + "/qmp.sock"
        _ = try Self.serveOnce(path: socket) { _ in
            #"{"event": "STOP", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}"#
        }
        let result = try CommandLineCLITests.run(["qmp", "--socket", socket, "--timeout", "1", "query-status"])
        #expect(result.status == ExitStatus.timeout.rawValue, "\(result.err)")
        #expect(result.err.contains("no reply from QEMU within"), "\(result.err)")
    }
}
