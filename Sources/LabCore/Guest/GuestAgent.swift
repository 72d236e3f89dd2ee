import Platform
import QMP
import Synchronization

/// A client of the QEMU guest agent (qemu-ga) running in the guest, over the
/// virtio-serial port QEMU exposes as a Unix socket (`-chardev socket,...,id=qga0
/// -device virtio-serial -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0`).
///
/// Built on the QMP library's ``RequestEngine``, as ``QMPClient`` is (ids,
/// deadlines, fail-all, cancellation), over a ``MessageChannel`` (newline-framed
/// JSON) with a decoder that resets at a 0xFF byte: qemu-ga prefixes the
/// reply to `guest-sync-delimited` with 0xFF, so whatever a previous client
/// left half-read is dropped. Every connection starts with that sync, so
/// stale replies never answer a new request. After the agent's 0xFF, a
/// message that does not decode means the agent is broken: every pending
/// request fails at once with what was received, and the channel closes.
/// Timeouts fire whatever the agent sends meanwhile (``RequestEngine``).
///
/// Commands run with `guest-exec` (output captured), polled with
/// `guest-exec-status` until the process exits. Requests carry ids; qemu-ga
/// handles them one at a time, in order.
public final class GuestAgent: GuestSession {
    public let transportName = "agent"
    /// The program and its options that run a command line: `/bin/sh -c`, `cmd.exe /c` on Windows.
    public let shell: [String]
    /// The first and the longest pause between `guest-exec-status` polls.
    public let pollInterval: (first: Duration, maximum: Duration)

    /// Ids, deadlines, fail-all and cancellation (the engine QMP uses too); this class adds the agent's sync and routing.
    private let engine: RequestEngine<Waiting, JSONValue, Void>

    /// What a pending request is.
    struct Waiting: Sendable {
        var command: String
        /// `guest-sync(-delimited)`: the value its reply must return.
        var syncValue: Int?
    }

    private init(fd: Int32, shell: [String], pollInterval: (first: Duration, maximum: Duration)) throws(SystemCallError) {
        self.shell = shell
        self.pollInterval = pollInterval
        self.engine = try RequestEngine(
            adopting: fd, decoder: QMPMessageDecoder(resetByte: 0xFF), extra: (),
            policy: .init(
                failure: Self.failure,
                closedReason: { reason, malformed in
                    malformed.map { "the guest agent sent a malformed message: \($0)" }
                        ?? reason.replacingAll("QEMU closed", with: "the guest agent channel closed")
                }))
    }

    /// What a caller of `waiting` sees when it fails.
    static func failure(_ waiting: Waiting, _ failure: RequestFailure) -> any Error {
        switch failure {
        case .timedOut(let timeout):
            return GuestError.timeout(what: "reply from the guest agent to \(waiting.command)", seconds: timeout.inSeconds, consoleTail: "")
        case .closed(let reason), .alreadyClosed(let reason): return GuestError.disconnected(reason: reason, consoleTail: "")
        case .malformed(let error): return GuestError.agent("sent a malformed message while \(waiting.command) was pending: \(error)")
        case .sendFailed(let error): return GuestError.disconnected(reason: "\(error)", consoleTail: "")
        case .cancelled: return GuestError.cancelled
        }
    }

    /// The shell for an OS profile's guests.
    public static func shell(for os: GuestOS) -> [String] {
        os == .windows ? ["cmd.exe", "/c"] : ["/bin/sh", "-c"]
    }

    /// Connects to the agent socket at `path` and syncs with the agent.
    public static func connect(
        path: String, shell: [String] = ["/bin/sh", "-c"], timeout: Duration = .seconds(10),
        pollInterval: (first: Duration, maximum: Duration) = (.milliseconds(2), .milliseconds(100))
    ) async throws -> GuestAgent {
        let fd: Int32
        do { fd = try UnixSocket.connect(path: path) } catch { throw GuestError.connect(error.description) }
        return try await adopt(fd: fd, shell: shell, timeout: timeout, pollInterval: pollInterval)
    }

    /// Adopts a connected socket (the agent's side is elsewhere: QEMU, or a test's fake agent) and syncs.
    public static func adopt(
        fd: Int32, shell: [String] = ["/bin/sh", "-c"], timeout: Duration = .seconds(10),
        pollInterval: (first: Duration, maximum: Duration) = (.milliseconds(2), .milliseconds(100))
    ) async throws -> GuestAgent {
        let agent: GuestAgent
        do {
            agent = try GuestAgent(fd: fd, shell: shell, pollInterval: pollInterval)
        } catch {
            FileDescriptor(rawValue: fd).closeIgnoringErrors()
            throw GuestError.connect(error.description)
        }
        do {
            try agent.engine.start(onMessage: { [weak agent] message in agent?.deliver(message) })
        } catch {
            throw GuestError.connect(error.description)
        }
        do {
            try await agent.sync(timeout: timeout)
        } catch {
            agent.close()
            throw error
        }
        return agent
    }

    public func close() {
        engine.close()
    }

    // MARK: Protocol

    /// `guest-sync-delimited` with a random id, after a 0xFF byte that makes
    /// the agent drop any partial input; replies to earlier requests that
    /// arrive before the sync's are dropped.
    public func sync(timeout: Duration = .seconds(10)) async throws {
        var generator = SystemRandomNumberGenerator()
        let value = Int(generator.next(upperBound: UInt32(Int32.max)))
        do {
            try engine.channel.sendRaw([0xFF])
        } catch {
            throw GuestError.disconnected(reason: error.description, consoleTail: "")
        }
        let reply: JSONValue
        do {
            reply = try await request("guest-sync-delimited", arguments: ["id": JSONValue(value)], timeout: timeout, syncValue: value)
        } catch GuestError.timeout {
            throw GuestError.agent("no answer to guest-sync-delimited within \(formatGuestSeconds(timeout.inSeconds)): is qemu-ga running in the guest (and the lab's agent channel configured)?")
        }
        guard reply.intValue == value else {
            throw GuestError.agent("guest-sync-delimited returned \((try? reply.jsonString()) ?? "?"), expected \(value)")
        }
    }

    /// `guest-ping`: the agent answers.
    public func ping(timeout: Duration = .seconds(5)) async throws {
        _ = try await execute("guest-ping", timeout: timeout)
    }

    /// Executes an agent command and returns its `return` value.
    public func execute(_ command: String, arguments: JSONObject? = nil, timeout: Duration = .seconds(10)) async throws -> JSONValue {
        try await request(command, arguments: arguments, timeout: timeout, syncValue: nil)
    }

    private func request(_ command: String, arguments: JSONObject?, timeout: Duration, syncValue: Int?) async throws -> JSONValue {
        try await engine.request(Waiting(command: command, syncValue: syncValue), timeout: timeout) { id in
            var message: JSONObject = ["execute": .string(command), "id": JSONValue(Int(id))]
            if let arguments { message["arguments"] = .object(arguments) }
            do {
                return try JSONValue.object(message).serialized() + [0x0A]
            } catch {
                throw GuestError.agent("cannot encode \(command): \(error)")
            }
        }
    }

    /// Routes a reply by its id; one without an id (an agent that does not
    /// echo ids) goes to the sync whose value it returns, else to the oldest request.
    private func deliver(_ message: JSONObject) {
        guard message["return"] != nil || message["error"] != nil else { return }
        let result: Result<JSONValue, any Error>
        if let error = message["error"] {
            let errorClass = error["class"]?.stringValue ?? "Error"
            let description = error["desc"]?.stringValue ?? ((try? error.jsonString()) ?? "")
            result = .failure(AgentReplyError(errorClass: errorClass, description: description))
        } else {
            result = .success(message["return"] ?? .null)
        }
        func named(_ waiting: Waiting) -> Result<JSONValue, any Error> {
            result.mapError { error in
                let reply = error as! AgentReplyError
                return GuestError.agent("\(waiting.command): \(reply.errorClass): \(reply.description)")
            }
        }
        let returned = message["return"]?.intValue
        engine.update { table in
            if let id = message["id"] {
                guard let id = id.uint64Value else { return table.noteUnmatchedReply() }
                table.answer(id: id) { waiting in
                    // A sync is answered only by its own value (or an error).
                    if let value = waiting.syncValue, returned != value, message["error"] == nil { return nil }
                    return named(waiting)
                }
                return
            }
            if let returned, table.answerOldest(where: { $0.syncValue == returned }, named) { return }
            if !table.answerOldest(where: { $0.syncValue == nil }, named) { table.noteUnmatchedReply() }
        }
    }

    /// An agent's error reply, before it is named after the request it answers.
    private struct AgentReplyError: Error {
        var errorClass: String
        var description: String
    }

    // MARK: Running programs

    /// What `guest-exec` reported for a process that ended.
    public struct ExecResult: Sendable, Hashable {
        public var pid: Int
        public var exitCode: Int32?
        /// The signal that ended it (POSIX guests).
        public var signal: Int32?
        public var standardOutput: [UInt8]
        public var standardError: [UInt8]
        public var truncated: Bool
        public var duration: Duration

        /// The exit status a shell would show: the exit code, or 128 + the signal.
        public var status: Int32 { exitCode ?? signal.map { 128 + $0 } ?? -1 }
    }

    /// Runs `path` with `arguments` in the guest (`guest-exec`, output
    /// captured, `input` on its standard input) and polls `guest-exec-status`
    /// until it ends, at most `timeout`. On a timeout or when the task is
    /// cancelled the process may still run: on a POSIX guest qlab then asks
    /// the agent to kill it (best effort).
    public func exec(path: String, arguments: [String], input: [UInt8]? = nil, timeout: Duration) async throws -> ExecResult {
        let started = ContinuousClock.now
        let deadline = started + timeout
        var execArguments: JSONObject = [
            "path": .string(path), "arg": .array(arguments.map(JSONValue.string)), "capture-output": .bool(true),
        ]
        if let input { execArguments["input-data"] = .string(Base64.encode(input)) }
        let reply = try await execute("guest-exec", arguments: execArguments, timeout: min(timeout, .seconds(30)))
        guard let pid = reply["pid"]?.intValue else {
            throw GuestError.agent("guest-exec returned no pid: \((try? reply.jsonString()) ?? "?")")
        }
        do {
            return try await poll(pid: pid, path: path, arguments: arguments, started: started, deadline: deadline, timeout: timeout)
        } catch where Task.isCancelled {
            // Cancelled (e.g. `qlab exec` got SIGINT): the process would run on in the guest.
            await shielded { await self.killAfterTimeout(pid: pid) }
            throw GuestError.cancelled
        }
    }

    /// `guest-exec-status` until the process ends or the deadline passes.
    private func poll(pid: Int, path: String, arguments: [String], started: ContinuousClock.Instant, deadline: ContinuousClock.Instant, timeout: Duration) async throws -> ExecResult {
        var pause = pollInterval.first
        while true {
            let remaining = ContinuousClock.now.duration(to: deadline)
            if remaining <= .zero {
                await killAfterTimeout(pid: pid)
                throw GuestError.commandTimeout(
                    command: ([path] + arguments).joined(separator: " "), seconds: timeout.inSeconds, recovered: true, consoleTail: "")
            }
            let status = try await execute("guest-exec-status", arguments: ["pid": JSONValue(pid)], timeout: max(remaining, .seconds(5)))
            if status["exited"]?.boolValue == true {
                var result = ExecResult(
                    pid: pid, exitCode: status["exitcode"]?.intValue.map { Int32(truncatingIfNeeded: $0) },
                    signal: status["signal"]?.intValue.map { Int32(truncatingIfNeeded: $0) },
                    standardOutput: [], standardError: [],
                    truncated: status["out-truncated"]?.boolValue == true || status["err-truncated"]?.boolValue == true,
                    duration: started.duration(to: .now))
                for (key, keyPath) in [("out-data", \ExecResult.standardOutput), ("err-data", \ExecResult.standardError)] {
                    guard let text = status[key]?.stringValue else { continue }
                    guard let bytes = Base64.decode(text) else {
                        throw GuestError.agent("guest-exec-status: \(key) is not valid base64")
                    }
                    result[keyPath: keyPath] = bytes
                }
                return result
            }
            // A real backoff: the agent has no event for a guest-exec ending, only guest-exec-status.
            try await Task.sleep(for: min(pause, max(.zero, ContinuousClock.now.duration(to: deadline))))
            pause = min(pause * 2, pollInterval.maximum)
        }
    }

    /// Kills a process that outlived its timeout, and its children (POSIX guests; errors ignored).
    private func killAfterTimeout(pid: Int) async {
        guard shell.first != "cmd.exe" else { return }
        let script = "pkill -KILL -P \(pid) 2>/dev/null; kill -KILL \(pid) 2>/dev/null; true"
        _ = try? await execute(
            "guest-exec", arguments: ["path": .string(shell[0]), "arg": .array((Array(shell.dropFirst()) + [script]).map(JSONValue.string))],
            timeout: .seconds(5))
    }

    public func run(_ command: String, timeout: Duration) async throws -> GuestCommandResult {
        do {
            let result = try await exec(path: shell[0], arguments: Array(shell.dropFirst()) + [command], timeout: timeout)
            return GuestCommandResult(
                output: String(decoding: result.standardOutput, as: UTF8.self),
                errorOutput: String(decoding: result.standardError, as: UTF8.self),
                exitStatus: result.status, duration: result.duration, truncated: result.truncated)
        } catch GuestError.commandTimeout(_, let seconds, let recovered, let tail) {
            throw GuestError.commandTimeout(command: command, seconds: seconds, recovered: recovered, consoleTail: tail)
        }
    }
}
