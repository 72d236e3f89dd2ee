import Foundation
@testable import LabCore
import Platform
import QMP
import Testing

/// Command framing, marker matching and quoting, checked with the host's
/// own /bin/sh standing in for the guest's shell; and a fake console on a
/// socketpair for echo, kernel messages and login.
@Suite("Console framing")
struct ConsoleFramingTests {
    /// Runs `input` through /bin/sh (stdin, like a console shell) and returns what it printed.
    /// Files, not pipes: a pipe end inherited by a process another test starts
    /// at the same moment would hold back the end of input or output.
    static func shell(_ input: String) throws -> [UInt8] {
        let base = NSTemporaryDirectory() + "qlab-sh-" + UUID().uuidString
        defer {
            try? FileManager.default.removeItem(atPath: base + ".in")
            try? FileManager.default.removeItem(atPath: base + ".out")
        }
        try input.write(toFile: base + ".in", atomically: false, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "exec /bin/sh <\"$1\" >\"$2\" 2>&1", "sh", base + ".in", base + ".out"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return Array(try Data(contentsOf: URL(fileURLWithPath: base + ".out")))
    }

    /// Frames `command`, runs it in /bin/sh and parses the result the way the console does.
    static func framedRun(_ command: String, maximumLineBytes: Int = 1000) throws -> (output: String, status: Int?) {
        let framing = ConsoleCommandFraming()
        var input = ""
        switch try framing.plan(command, maximumLineBytes: maximumLineBytes) {
        case .line(let line):
            input = line + "\n"
        case .chunked(_, let chunks, let line):
            input = chunks.map { $0.line + "\n" }.joined() + line + "\n"
        }
        let bytes = try shell(input)
        return bytes.withUnsafeBufferPointer { buffer in
            guard let end = ConsoleMatcher.firstMatch(.marker(framing.endMarker, number: true), in: buffer, from: 0),
                let begin = ConsoleMatcher.firstMatch(.marker(framing.beginMarker, number: false), in: buffer, from: 0)
            else { return ("", nil) }
            let output = ConsoleCommandFraming.output(from: bytes[(begin.end + 1)..<end.start])
            return (output, end.value)
        }
    }

    @Test func framedCommandsKeepOutputAndStatusExact() throws {
        #expect(try Self.framedRun("echo hello") == ("hello\n", 0))
        #expect(try Self.framedRun("printf abc; exit 9") == ("abc", 9))
        #expect(try Self.framedRun("") == ("", 0))
        #expect(try Self.framedRun("echo a\nif true; then\n  echo b\nfi") == ("a\nb\n", 0))
        #expect(try Self.framedRun("cat; echo x") == ("x\n", 0))
        #expect(try Self.framedRun("printf '\\n\\n'") == ("\n\n", 0))
    }

    @Test func quotingSurvivesTheShell() throws {
        for text in ["it's", "'", "''\\'", "$HOME `id` $(id) \"q\"", "tab\there", "ctl\u{1}\u{3}\u{15}\u{7f}", "ünïcødé ✓", "a\nb", "trailing\n\n"] {
            let printed = try Self.framedRun("printf '%s' " + ConsoleCommandFraming.shellQuote(text))
            #expect(printed.output == text, "\(text.debugDescription)")
            #expect(printed.status == 0)
            // What is typed holds no control character but newline.
            let typed = ConsoleCommandFraming.shellQuote(text)
            #expect(!typed.unicodeScalars.contains { ($0.value < 0x20 && $0 != "\n") || $0.value == 0x7F })
        }
    }

    @Test func longCommandsAreChunked() throws {
        let word = String(repeating: "y'z", count: 1500)
        let command = "printf '%s' " + ConsoleCommandFraming.shellQuote(word) + " | wc -c"
        let framing = ConsoleCommandFraming()
        guard case .chunked(_, let chunks, let line) = try framing.plan(command, maximumLineBytes: 500) else {
            Issue.record("a 4500-byte command was not chunked")
            return
        }
        #expect(chunks.count > 1)
        for typed in chunks.map(\.line) + [line] {
            #expect(ConsoleCommandFraming.longestLine(typed) <= 500)
        }
        let result = try Self.framedRun(command, maximumLineBytes: 500)
        #expect(result.output.trimmingCharacters(in: .whitespacesAndNewlines) == "4500")
        #expect(result.status == 0)
        #expect(throws: GuestError.self) { try framing.plan("a\u{0}b", maximumLineBytes: 500) }
    }

    @Test func typedLineNeverContainsItsOwnMarkers() throws {
        let framing = ConsoleCommandFraming()
        guard case .line(let line) = try framing.plan("echo hi", maximumLineBytes: 1000) else { return }
        #expect(!line.contains(framing.beginMarker))
        #expect(!line.contains(framing.endMarker))
    }

    static func match(_ pattern: ConsolePattern, _ text: String) -> ConsoleMatch? {
        Array(text.utf8).withUnsafeBufferPointer { ConsoleMatcher.firstMatch(pattern, in: $0, from: 0) }
    }

    @Test func markersSurviveKernelMessagesAndCarriageReturns() {
        let marker = "__QLAB_END_0123456789abcdef__="
        let plain = Self.match(.marker(marker, number: true), "out\r\n__QLAB_END_0123456789abcdef__=12\r\n# ")
        #expect(plain?.value == 12)
        let split = "x\r\n__QLAB_E[   12.345678] sd 2:0:0:0: [sda] Attached SCSI disk\r\nND_0123456789abcdef__=1[    0.1] more\r\n3\r\n"
        #expect(Self.match(.marker(marker, number: true), split)?.value == 13)
        // Incomplete: no line end after the number yet.
        #expect(Self.match(.marker(marker, number: true), "__QLAB_END_0123456789abcdef__=12") == nil)
        // Another nonce, or text that is not a kernel line in between: no match.
        #expect(Self.match(.marker(marker, number: true), "__QLAB_END_0123456789abcdee__=0\n") == nil)
        #expect(Self.match(.marker(marker, number: true), "__QLAB_E[x] ND_0123456789abcdef__=0\n") == nil)
        #expect(Self.match(.anyOf(["login:", "# "]), "Debian login: ")?.alternative == 0)
        #expect(Self.match(.regex("ready-[0-9]+"), "boot... ready-42\r\n")?.start == 8)
    }

    @Test func tailLeavesMarkersOut() {
        let text = "# __QLAB_BEGIN_0123456789abcdef__\nhello\n\n__QLAB_END_0123456789abcdef__=0\n# __QLAB_CHUNK_0123456789abcdef_3__\nreal __QLAB_ text"
        #expect(ConsoleCommandFraming.withoutMarkers(text) == "# \nhello\n\n# \nreal __QLAB_ text")
    }
}

/// A console on a socketpair: a line is run by /bin/sh and its output
/// written back with `\r\n`, optionally with the typed line echoed first, a
/// kernel message spliced into the middle of the output, and a login first.
final class FakeConsole: @unchecked Sendable {
    let consoleFD: Int32
    let clientFD: Int32
    let echo: Bool
    let kernelNoise: Bool
    let login: (user: String, password: String)?
    private var thread: Thread?
    /// Each line the fake's shell received, as it arrives (before it runs).
    let receivedLines: AsyncStream<String>
    private let receivedLine: AsyncStream<String>.Continuation

    init(echo: Bool = false, kernelNoise: Bool = false, login: (user: String, password: String)? = nil) throws {
        let (a, b) = try UnixSocket.pair()
        consoleFD = a
        clientFD = b
        self.echo = echo
        self.kernelNoise = kernelNoise
        self.login = login
        (receivedLines, receivedLine) = AsyncStream.makeStream(of: String.self)
        let thread = Thread { [self] in serve() }
        self.thread = thread
        thread.start()
    }

    private func write(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(consoleFD, $0.baseAddress, $0.count) }
    }

    private func serve() {
        var line: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        // 0: at login prompt, 1: at password prompt, 2: shell
        var stage = login == nil ? 2 : 0
        var typedUser = ""
        var script: [String] = []
        if login != nil { write("\r\nfake login: ") } else { write("# ") }
        while true {
            let n = read(consoleFD, &buffer, buffer.count)
            if n <= 0 { break }
            for byte in buffer[0..<n] {
                if byte == 0x15 { line = []; continue }
                if byte == 0x03 { line = []; write("^C\r\n# "); continue }
                guard byte == 0x0A else { line.append(byte); continue }
                let text = String(decoding: line, as: UTF8.self)
                line = []
                if echo && stage != 1 { write(text + "\r\n") }
                switch stage {
                case 0:
                    if text.isEmpty { write("\r\nfake login: "); continue }
                    typedUser = text
                    stage = 1
                    write("Password: ")
                case 1:
                    if typedUser == login?.user && text == login?.password {
                        stage = 2
                        write("\r\nWelcome\r\n# ")
                    } else {
                        stage = 0
                        write("\r\nLogin incorrect\r\nfake login: ")
                    }
                default:
                    receivedLine.yield(text)
                    // Multi-line commands (here-documents, quotes) arrive line by line; run when complete.
                    script.append(text)
                    let whole = script.joined(separator: "\n")
                    guard let output = try? ConsoleFramingTests.shell(whole + "\n") else { continue }
                    if String(decoding: output, as: UTF8.self).contains("unterminated") { continue }
                    script = []
                    var reply = String(decoding: output, as: UTF8.self).replacingOccurrences(of: "\n", with: "\r\n")
                    if kernelNoise, let index = reply.range(of: "ND_") {
                        reply.insert(contentsOf: "[   42.000001] fake kernel message\r\n", at: index.lowerBound)
                    }
                    write(reply + "# ")
                }
            }
        }
        receivedLine.finish()
        close(consoleFD)
    }

    /// Waits until the shell has received a line containing `text` (the command
    /// is then running in the fake, or about to); false after `timeout`.
    func waitForLine(containing text: String, timeout: Duration = .seconds(20)) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { [receivedLines] in
                for await line in receivedLines where line.contains(text) { return true }
                return false
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }
}

@Suite("Guest console (fake console)")
struct FakeConsoleTests {
    @Test func echoingConsoleAndKernelMessagesInsideTheMarker() async throws {
        let fake = try FakeConsole(echo: true, kernelNoise: true)
        let console = try GuestConsole.adopt(fd: fake.clientFD)
        defer { console.close() }
        let result = try await console.run("echo hello; exit 3", timeout: .seconds(10))
        #expect(result.output == "hello\n")
        #expect(result.exitStatus == 3)
        let second = try await console.run("printf 'a\\nb\\n'", timeout: .seconds(10))
        #expect(second.output == "a\nb\n")
        #expect(second.exitStatus == 0)
    }

    @Test func logsInThenRuns() async throws {
        let fake = try FakeConsole(echo: true, login: ("root", "s3cret"))
        let console = try GuestConsole.adopt(fd: fake.clientFD)
        defer { console.close() }
        let guest = LabGuest(name: "g", os: .linux, ready: "fake login:", login: GuestLogin(user: "root", password: "s3cret", loginPrompt: "fake login: "), bootTimeout: .seconds(20))
        let readiness = try await console.waitForReady(guest)
        #expect(readiness.loggedIn)
        #expect(readiness.evidence == .console)
        #expect(try await console.run("echo in", timeout: .seconds(10)).output == "in\n")
    }

    @Test func wrongPasswordIsALoginFailure() async throws {
        let fake = try FakeConsole(login: ("root", "right"))
        let console = try GuestConsole.adopt(fd: fake.clientFD)
        defer { console.close() }
        let guest = LabGuest(name: "g", os: .linux, login: GuestLogin(user: "root", password: "wrong", loginPrompt: "fake login: "), bootTimeout: .seconds(20))
        do {
            try await console.waitForReady(guest)
            Issue.record("login with a wrong password succeeded")
        } catch let error as GuestError {
            guard case .loginFailed(_, let tail) = error else {
                Issue.record("expected loginFailed, got \(error)")
                return
            }
            #expect(tail.contains("Login incorrect"))
        }
    }

    @Test func concurrentUseIsRefused() async throws {
        let fake = try FakeConsole()
        let console = try GuestConsole.adopt(fd: fake.clientFD)
        defer { console.close() }
        // The first command runs until the test lets it finish (a file appears).
        let release = NSTemporaryDirectory() + "qlab-release-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        defer { unlink(release) }
        async let slow = console.run("while [ ! -e \(release) ]; do sleep 0.05; done; echo slow", timeout: .seconds(30))
        #expect(await fake.waitForLine(containing: release), "the fake never received the first command")
        do {
            _ = try await console.run("echo fast", timeout: .seconds(10))
            Issue.record("a second command ran while the first one was running")
        } catch let error as GuestError {
            guard case .busy = error else {
                Issue.record("expected busy, got \(error)")
                _ = FileManager.default.createFile(atPath: release, contents: nil)
                _ = try? await slow
                return
            }
        }
        _ = FileManager.default.createFile(atPath: release, contents: nil)
        #expect(try await slow.output == "slow\n")
    }

    @Test func cancelledCommandIsInterruptedBeforeTheNext() async throws {
        let fake = try FakeConsole(echo: true)
        let console = try GuestConsole.adopt(fd: fake.clientFD)
        defer { console.close() }
        let task = Task { try await console.run("sleep 2; echo late", timeout: .seconds(30)) }
        #expect(await fake.waitForLine(containing: "echo late"), "the fake never received the command")
        task.cancel()
        do {
            _ = try await task.value
            Issue.record("the cancelled command finished")
        } catch let error as GuestError {
            guard case .cancelled = error else {
                Issue.record("expected cancelled, got \(error)")
                return
            }
        }
        // The next command first sends Ctrl-C (the fake answers "^C") and then runs.
        let next = try await console.run("echo next", timeout: .seconds(30))
        #expect(next.output == "next\n")
        #expect(console.tail().contains("^C"))
    }

    @Test func closedConsoleEndsWaits() async throws {
        let fake = try FakeConsole()
        let console = try GuestConsole.adopt(fd: fake.clientFD)
        defer { console.close() }
        Task {
            try await Task.sleep(for: .milliseconds(200))
            shutdown(fake.consoleFD, Int32(SHUT_RDWR))
        }
        do {
            try await console.waitFor("never printed", timeout: .seconds(30))
            Issue.record("a wait on a closed console returned")
        } catch let error as GuestError {
            guard case .disconnected = error else {
                Issue.record("expected disconnected, got \(error)")
                return
            }
        }
    }
}
