#if canImport(Glibc)
import Glibc
#endif
import Platform
import Synchronization

/// A lab guest's serial console, driven by a program: wait for text, type
/// lines, run shell commands and get their output and exit status.
///
/// Connects to the console socket QEMU serves (`-chardev socket,server=on`).
/// QEMU serves one client at a time and drops the guest's output while none
/// is connected (its `logfile=` keeps it all): hold one `GuestConsole` per
/// lab and close it when done; `qlab console` cannot attach meanwhile.
///
/// Reading happens on a thread of its own into a bounded buffer (4 MiB by
/// default). Waits search from a cursor that each successful wait moves past
/// its match, so a text is found once. Commands are framed with markers
/// unique to each call (``ConsoleCommandFraming``): the console's echo of the
/// typed line, carriage returns, kernel messages printed in the middle of a
/// marker and text that merely looks like a marker do not confuse it.
///
/// One operation at a time: a second concurrent call fails with ``GuestError/busy``.
public final class GuestConsole: GuestSession {
    public struct Options: Sendable {
        /// The longest line typed at once; longer commands go to a file in the guest first, in chunks.
        /// 4095 is a Linux tty's canonical limit; busybox's line editor (a console with echo) takes 1023.
        public var maximumLineBytes: Int
        /// How long a probe may take when checking that the shell answers (after Ctrl-C, after login).
        public var probeTimeout: Duration
        /// How many Ctrl-C + probe rounds recovery tries.
        public var recoveryAttempts: Int
        /// Bytes of console output kept in memory.
        public var bufferCapacity: Int
        /// The console's command language. ``GuestConsole/connect(runtime:options:)``
        /// sets it from the lab's guest (its OS profile).
        public var shell: ConsoleShell

        public init(maximumLineBytes: Int = 1000, probeTimeout: Duration = .seconds(5), recoveryAttempts: Int = 3, bufferCapacity: Int = 4 << 20, shell: ConsoleShell = .posix) {
            self.shell = shell
            self.maximumLineBytes = maximumLineBytes
            self.probeTimeout = probeTimeout
            self.recoveryAttempts = recoveryAttempts
            self.bufferCapacity = bufferCapacity
        }
    }

    /// How ``waitForReady(_:since:timeout:)`` knew the guest was up.
    public struct Readiness: Sendable, Hashable {
        public enum Evidence: String, Sendable {
            /// The ready text was already in the console log.
            case log
            /// The ready text arrived on the console.
            case console
            /// The guest has no ready text: its shell answered a probe.
            case probe
        }
        public var evidence: Evidence
        /// Whether qlab logged in on the console.
        public var loggedIn: Bool
        /// From the call to the shell answering.
        public var waited: Duration
    }

    public let transportName = "console"
    /// The console socket.
    public let path: String
    /// QEMU's log of this console (everything, also what came before connecting), when known.
    public let logPath: String?
    /// Where this boot's output begins in `logPath` (``LabRecord/consoleLogOffset``).
    public let bootLogOffset: Int
    public let options: Options
    /// The connection now: a fast revert replaces QEMU, and the console
    /// reconnects by ``path`` when the next command or wait begins (``followReplacedQEMU()``).
    var stream: ConsoleStream { streams.withLock { $0.stream } }
    private let streams: Mutex<(stream: ConsoleStream, closedByUser: Bool)>

    struct State {
        var cursor = 0
        var busy = false
        /// False after a timeout that Ctrl-C did not cure.
        var usable = true
        /// Nothing typed on this connection yet: clear a half-typed line first.
        var firstLine = true
    }
    private let state = Mutex<State>(State())

    init(path: String, logPath: String?, bootLogOffset: Int, options: Options, stream: ConsoleStream) {
        self.path = path
        self.logPath = logPath
        self.bootLogOffset = bootLogOffset
        self.options = options
        self.streams = Mutex((stream, false))
    }

    deinit {
        stream.close()
    }

    /// Connects to the console socket at `path` (`socket(2)` + `connect(2)`).
    public static func connect(path: String, logPath: String? = nil, bootLogOffset: Int = 0, options: Options = Options()) throws -> GuestConsole {
        let fd: Int32
        do { fd = try UnixSocket.connect(path: path) } catch { throw GuestError.connect(error.description) }
        return try adopt(fd: fd, path: path, logPath: logPath, bootLogOffset: bootLogOffset, options: options)
    }

    /// Adopts a connected stream socket whose other end is a console (QEMU's, or a test's fake); closes it when done.
    public static func adopt(fd: Int32, path: String = "", logPath: String? = nil, bootLogOffset: Int = 0, options: Options = Options()) throws -> GuestConsole {
        let stream: ConsoleStream
        do {
            stream = try ConsoleStream(adopting: fd, capacity: options.bufferCapacity)
        } catch {
            Glibc.close(fd)
            throw GuestError.connect(error.description)
        }
        do { try stream.start() } catch { throw GuestError.connect(error.description) }
        return GuestConsole(path: path, logPath: logPath, bootLogOffset: bootLogOffset, options: options, stream: stream)
    }

    /// Connects to the console of the running lab `runtime`, speaking the
    /// command language of the guest its record names (``OSProfile/shell``).
    public static func connect(runtime: LabRuntime, options: Options = Options()) throws -> GuestConsole {
        guard let record = try runtime.record, runtime.liveQEMU(record) != nil else { throw LabError.notRunning(runtime.name) }
        var options = options
        if let guest = try? record.lab().selectGuest(record.guest) { options.shell = guest.profile.shell }
        return try connect(path: runtime.consoleSocketPath, logPath: record.consoleLog, bootLogOffset: record.consoleLogOffset, options: options)
    }

    /// Disconnects; QEMU's console is free for the next client.
    public func close() {
        streams.withLock { $0.closedByUser = true }
        stream.close()
    }

    /// When QEMU closed this connection and a console socket is at ``path``
    /// again (the lab's supervisor replaced QEMU for a fast revert), connects
    /// to it and starts reading afresh (the cursor moves to the new stream's
    /// start). Anything else stays as it is.
    func followReplacedQEMU() {
        guard !path.isEmpty, stream.closedReason != nil, !streams.withLock({ $0.closedByUser }),
            let fd = try? UnixSocket.connect(path: path)
        else { return }
        guard let fresh = try? ConsoleStream(adopting: fd, capacity: options.bufferCapacity) else {
            Glibc.close(fd)
            return
        }
        guard (try? fresh.start()) != nil else { return }
        let old = streams.withLock { current in
            defer { current.stream = fresh }
            return current.stream
        }
        old.close()
        state.withLock { s in
            s.cursor = 0
            s.firstLine = true
            s.usable = true
        }
    }

    // MARK: Reading

    /// Bytes received on this connection so far (a stream offset).
    public var received: Int { stream.received }
    /// Where the next wait starts searching.
    public var cursor: Int { state.withLock { $0.cursor } }

    /// Forgets everything received so far: the next wait looks only at what comes after.
    public func skipReceived() {
        let end = stream.received
        state.withLock { $0.cursor = max($0.cursor, end) }
    }

    /// What the console printed last (up to `bytes`), `\r` dropped: from
    /// QEMU's log when known (it has what came before connecting too), else
    /// from this connection.
    /// qlab's command framing is left out (``ConsoleLog/withoutFraming(_:)``),
    /// and so is what the log holds of earlier boots.
    public func tail(bytes: Int = 2048) -> String {
        if let logPath, ConsoleLog.size(logPath) > 0 {
            return ConsoleLog.tail(logPath, bytes: bytes, since: bootLogOffset)
        }
        return ConsoleLog.text(ConsoleLog.withoutFraming(stream.tail(4 * bytes)).suffix(bytes))
    }

    /// The result of a wait: what came before the match, and the match.
    public struct WaitResult: Sendable {
        /// The text from the cursor to the end of the match, `\r` dropped.
        public var text: String
        public var match: ConsoleMatch
    }

    /// Waits until `pattern` appears after the cursor; moves the cursor past it.
    public func waitFor(_ pattern: ConsolePattern, timeout: Duration) async throws -> WaitResult {
        try acquire()
        defer { release() }
        return try await waitUnlocked(pattern, timeout: timeout)
    }

    /// Waits until `text` appears after the cursor; returns what the console printed up to and including it.
    @discardableResult
    public func waitFor(_ text: String, timeout: Duration) async throws -> String {
        try await waitFor(.text(text), timeout: timeout).text
    }

    func waitUnlocked(_ pattern: ConsolePattern, timeout: Duration) async throws -> WaitResult {
        let from = cursor
        switch await stream.wait(for: pattern, from: from, timeout: timeout) {
        case .matched(let match):
            state.withLock { $0.cursor = max($0.cursor, match.end) }
            let text = ConsoleLog.text(stream.bytes(from..<match.end).bytes)
            return WaitResult(text: text, match: match)
        case .timedOut:
            throw GuestError.timeout(what: pattern.summary, seconds: timeout.inSeconds, consoleTail: tail())
        case .closed(let reason):
            throw GuestError.disconnected(reason: reason, consoleTail: tail())
        case .cancelled:
            throw GuestError.cancelled
        }
    }

    // MARK: Writing

    /// Types `line` and a line end (`\n`).
    public func sendLine(_ line: String) throws {
        try stream.write(Array((line + "\n").utf8))
    }

    /// `sendLine` without holding a thread while the guest takes no input.
    private func typeLine(_ line: String) async throws {
        try await stream.writeAsync(Array((line + "\n").utf8))
    }

    /// Sends bytes as they are.
    public func send(_ bytes: [UInt8]) throws {
        try stream.write(bytes)
    }

    /// Ctrl-C: the tty sends SIGINT to the foreground command (and drops a half-typed line).
    public func interrupt() throws {
        try stream.write([0x03])
    }

    // MARK: Commands

    public func run(_ command: String, timeout: Duration) async throws -> GuestCommandResult {
        try await run(command, timeout: timeout, interruptOnTimeout: true)
    }

    /// Runs `command` in the console's shell (POSIX sh) and waits for it.
    ///
    /// On a timeout, with `interruptOnTimeout`, qlab sends Ctrl-C and checks
    /// that the shell answers again (``recover()``); the thrown
    /// ``GuestError/commandTimeout(command:seconds:recovered:consoleTail:)``
    /// says whether it did. A console that did not recover is retried once
    /// more before the next command, which fails with
    /// ``GuestError/consoleUnusable(reason:consoleTail:)`` if it still does not answer.
    public func run(_ command: String, timeout: Duration, interruptOnTimeout: Bool) async throws -> GuestCommandResult {
        try acquire()
        defer { release() }
        if !state.withLock({ $0.usable }) {
            guard await recoverUnlocked() else {
                throw GuestError.consoleUnusable(reason: "the shell does not answer, not even after Ctrl-C; restart the guest", consoleTail: tail())
            }
        }
        do {
            return try await runUnlocked(command, timeout: timeout)
        } catch GuestError.timeout(_, let seconds, let tailAtTimeout) {
            var recovered = false
            if interruptOnTimeout { recovered = await recoverUnlocked() }
            state.withLock { $0.usable = recovered }
            throw GuestError.commandTimeout(command: command, seconds: seconds, recovered: recovered, consoleTail: tailAtTimeout)
        } catch GuestError.cancelled {
            // The command may still run: the next one starts with Ctrl-C.
            state.withLock { $0.usable = false }
            throw GuestError.cancelled
        }
    }

    /// Sends Ctrl-C and checks that the shell answers a probe, a few times;
    /// true when it does. A console that answers is usable again.
    @discardableResult
    public func recover() async throws -> Bool {
        try acquire()
        defer { release() }
        return await recoverUnlocked()
    }

    /// Checks that the shell answers (runs `:`) within `timeout`.
    public func probe(timeout: Duration? = nil) async throws -> Bool {
        try acquire()
        defer { release() }
        return await probeUnlocked(timeout: timeout ?? options.probeTimeout)
    }

    func probeUnlocked(timeout: Duration) async -> Bool {
        guard let result = try? await runUnlocked(options.shell.probeCommand, timeout: timeout) else { return false }
        return result.exitStatus == 0
    }

    func recoverUnlocked() async -> Bool {
        for _ in 0..<max(1, options.recoveryAttempts) {
            guard (try? await stream.writeAsync([0x03])) != nil else { break }  // Ctrl-C
            if await probeUnlocked(timeout: options.probeTimeout) {
                state.withLock { $0.usable = true }
                return true
            }
            if stream.closedReason != nil { break }
        }
        state.withLock { $0.usable = false }
        return false
    }

    /// Types the framed command and waits for its end marker. Timeouts
    /// surface as ``GuestError/timeout(what:seconds:consoleTail:)``.
    func runUnlocked(_ command: String, timeout: Duration) async throws -> GuestCommandResult {
        let started = ContinuousClock.now
        let deadline = started + timeout
        let framing = ConsoleCommandFraming(shell: options.shell)
        let plan = try framing.plan(command, maximumLineBytes: options.maximumLineBytes)
        let clearLine = state.withLock { s -> Bool in
            defer { s.firstLine = false }
            return s.firstLine
        }
        // ^U (the tty's kill character) drops whatever half line a previous client left.
        var prefix: [UInt8] = clearLine ? [0x15] : []
        var line: String
        switch plan {
        case .line(let text):
            line = text
        case .chunked(_, let chunks, let text):
            line = text
            for chunk in chunks {
                let from = stream.received
                try await stream.writeAsync(prefix + Array((chunk.line + "\n").utf8))
                prefix = []
                let result = await stream.wait(for: .marker(chunk.marker, number: false), from: from, timeout: ContinuousClock.now.duration(to: deadline))
                try check(result, what: "the end of writing the command to the guest", timeout: timeout)
            }
        }
        let from = stream.received
        try await stream.writeAsync(prefix + Array((line + "\n").utf8))
        let outcome = await stream.wait(
            for: .marker(framing.endMarker, number: true), from: from, timeout: max(.zero, ContinuousClock.now.duration(to: deadline)))
        let end = try check(outcome, what: "end of the command", timeout: timeout)
        let duration = started.duration(to: .now)
        let (region, truncated) = stream.bytes(from..<end.start)
        var outputStart = 0
        var lost = truncated
        let begin = region.withUnsafeBufferPointer { ConsoleMatcher.firstMatch(.marker(framing.beginMarker, number: false), in: $0, from: 0) }
        if let begin {
            outputStart = begin.end
            // The line end after the begin marker is qlab's.
            while outputStart < region.count && region[outputStart] == 0x0D { outputStart += 1 }
            if outputStart < region.count && region[outputStart] == 0x0A { outputStart += 1 }
        } else {
            lost = true  // the beginning was dropped from the buffer
        }
        state.withLock { $0.cursor = max($0.cursor, end.end) }
        stream.discard(before: end.end)
        let output = ConsoleCommandFraming.output(from: region[outputStart...], dropAllReturns: options.shell == .grub)
        return GuestCommandResult(
            output: output, errorOutput: nil,
            exitStatus: framing.exitStatus(reported: end.value, output: output), duration: duration, truncated: lost)
    }

    @discardableResult
    private func check(_ outcome: ConsoleStream.WaitOutcome, what: String, timeout: Duration) throws -> ConsoleMatch {
        switch outcome {
        case .matched(let match): return match
        case .timedOut: throw GuestError.timeout(what: what, seconds: timeout.inSeconds, consoleTail: tail())
        case .closed(let reason): throw GuestError.disconnected(reason: reason, consoleTail: tail())
        case .cancelled: throw GuestError.cancelled
        }
    }

    // MARK: Boot and login

    /// Waits until the guest has booted and its shell answers: the guest's
    /// `ready` text in this boot's console output (read from QEMU's console
    /// log from `since`, by default where this boot began, and from the
    /// socket), then a console login when the guest has `login:`, then a
    /// probe command. A guest without `ready` text is probed until its shell
    /// answers (or, with `login:`, until its login prompt appears).
    ///
    /// `since`: a console log offset taken before the boot (e.g. before a
    /// `system_reset`); nil means ``bootLogOffset``. `timeout` defaults to
    /// the guest's `boot_timeout`.
    @discardableResult
    public func waitForReady(_ guest: LabGuest, since logOffset: Int? = nil, timeout: Duration? = nil) async throws -> Readiness {
        try acquire()
        defer { release() }
        let started = ContinuousClock.now
        let limit = timeout ?? guest.bootTimeout
        let deadline = started + limit
        func remaining() -> Duration { max(.zero, ContinuousClock.now.duration(to: deadline)) }
        let offset = logOffset ?? bootLogOffset

        var evidence = Readiness.Evidence.probe
        let readyText = guest.ready ?? guest.login.map { $0.loginPrompt ?? guest.profile.loginPrompt }.map(Self.trimmedPrompt)
        if let readyText, !readyText.isEmpty {
            evidence = try await waitForBootText(readyText, logOffset: offset, deadline: deadline, limit: limit)
        }
        var loggedIn = false
        if let login = guest.login {
            try await logInUnlocked(login, profile: guest.profile, shellPrompt: guest.effectivePrompt, timeout: remaining())
            loggedIn = true
        }
        // The shell answers: a probe, retried while the guest may still be starting it.
        while true {
            let slice = min(remaining(), options.probeTimeout)
            if await probeUnlocked(timeout: slice) { break }
            if let reason = stream.closedReason { throw GuestError.disconnected(reason: reason, consoleTail: tail()) }
            if remaining() <= .zero {
                throw GuestError.timeout(
                    what: readyText == nil ? "answer from the guest's shell" : "answer from the guest's shell after \"\(readyText!)\"",
                    seconds: limit.inSeconds, consoleTail: tail())
            }
        }
        state.withLock { $0.usable = true }
        return Readiness(evidence: evidence, loggedIn: loggedIn, waited: started.duration(to: .now))
    }

    /// Waits for `text` in the console log (from `logOffset`) or on the
    /// socket, whichever shows it first. The log is re-read while waiting:
    /// QEMU accepts a new client in its main loop, and what the guest prints
    /// before that reaches only the log.
    private func waitForBootText(_ text: String, logOffset: Int, deadline: ContinuousClock.Instant, limit: Duration) async throws -> Readiness.Evidence {
        let needle = Array(text.utf8)
        var logPosition = logOffset
        while true {
            if let logPath, let bytes = ConsoleLog.read(logPath, from: logPosition), !bytes.isEmpty {
                let found = bytes.withUnsafeBufferPointer { ConsoleMatcher.find(needle, in: $0, from: 0, before: $0.count) }
                if found != nil {
                    skipReceivedUnlocked()
                    return .log
                }
                logPosition += max(0, bytes.count - (needle.count - 1))
            }
            let remaining = ContinuousClock.now.duration(to: deadline)
            if remaining <= .zero {
                throw GuestError.timeout(what: "ready text \"\(text)\"", seconds: limit.inSeconds, consoleTail: tail())
            }
            let slice = logPath == nil ? remaining : min(remaining, .milliseconds(250))
            switch await stream.wait(for: .text(text), from: cursor, timeout: slice) {
            case .matched(let match):
                state.withLock { $0.cursor = max($0.cursor, match.end) }
                return .console
            case .timedOut: continue
            case .closed(let reason): throw GuestError.disconnected(reason: reason, consoleTail: tail())
            case .cancelled: throw GuestError.cancelled
            }
        }
    }

    private func skipReceivedUnlocked() {
        let end = stream.received
        state.withLock { $0.cursor = max($0.cursor, end) }
    }

    /// Logs in on the console: Enter, then the user name at the login
    /// prompt and the password at the password prompt. Nothing is sent when
    /// the shell prompt answers Enter (already logged in).
    public func logIn(_ login: GuestLogin, profile: OSProfile, shellPrompt: String, timeout: Duration) async throws {
        try acquire()
        defer { release() }
        try await logInUnlocked(login, profile: profile, shellPrompt: shellPrompt, timeout: timeout)
        guard await probeUnlocked(timeout: options.probeTimeout) else {
            throw GuestError.loginFailed(reason: "logged in as \(login.user), but the shell does not answer", consoleTail: tail())
        }
    }

    private func logInUnlocked(_ login: GuestLogin, profile: OSProfile, shellPrompt: String, timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        func remaining() -> Duration { max(.zero, ContinuousClock.now.duration(to: deadline)) }
        let loginPrompt = Self.trimmedPrompt(login.loginPrompt ?? profile.loginPrompt)
        let passwordPrompt = Self.trimmedPrompt(login.passwordPrompt ?? profile.passwordPrompt)
        let shell = Self.trimmedPrompt(shellPrompt)
        skipReceivedUnlocked()
        try await typeLine("")
        state.withLock { $0.firstLine = false }
        let first: WaitResult
        do {
            first = try await waitUnlocked(.anyOf([loginPrompt, shell].filter { !$0.isEmpty }), timeout: remaining())
        } catch GuestError.timeout(_, _, let tail) {
            throw GuestError.loginFailed(reason: "no login prompt \"\(loginPrompt)\" after Enter", consoleTail: tail)
        }
        if first.match.alternative == 1 || loginPrompt.isEmpty { return }  // a shell already
        try await typeLine(login.user)
        guard let password = login.password else { return }
        do {
            let next = try await waitUnlocked(.anyOf([passwordPrompt, shell].filter { !$0.isEmpty }), timeout: remaining())
            if next.match.alternative == 1 { return }
        } catch GuestError.timeout(_, _, let tail) {
            throw GuestError.loginFailed(reason: "no password prompt \"\(passwordPrompt)\" after the user name \(login.user)", consoleTail: tail)
        }
        try await typeLine(password)
        // The shell prompt, or a refusal (a message, or the login prompt again); the probe that follows decides.
        let outcomes = [shell, "incorrect", "Login failed", loginPrompt].filter { !$0.isEmpty }
        let after = try? await waitUnlocked(.anyOf(outcomes), timeout: remaining())
        if let after, outcomes[after.match.alternative] != shell {
            throw GuestError.loginFailed(reason: "the guest refused user \(login.user)'s password", consoleTail: tail())
        }
    }

    /// Prompts are matched without their trailing blanks (a terminal may not show them).
    static func trimmedPrompt(_ prompt: String) -> String {
        var text = Substring(prompt)
        while let last = text.last, last == " " || last == "\t" { text.removeLast() }
        return String(text)
    }

    // MARK: Exclusive use

    private func acquire() throws(GuestError) {
        let free = state.withLock { s -> Bool in
            if s.busy { return false }
            s.busy = true
            return true
        }
        if !free { throw GuestError.busy }
        followReplacedQEMU()
    }

    private func release() {
        state.withLock { $0.busy = false }
    }
}
