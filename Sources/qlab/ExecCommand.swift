import ArgumentParser
import Foundation
import LabCore
import Platform
import QMP

struct ExecCommand: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run one command in a lab's guest: its output on stdout, its exit status as qlab's.",
        discussion: """
            The command words are joined with spaces and run by the guest's shell (sh -c), \
            through the guest agent when the lab has one and it answers, else on the serial \
            console (where stdout and stderr are one stream). Exit status: the command's own; \
            124 when it did not finish within --timeout (qlab interrupts it with Ctrl-C and \
            prints the console's last lines on stderr), or with --ready when the guest was not \
            ready within its boot_timeout; when qlab itself failed, the table's \
            status with a `qlab exec:` line on stderr (3 the lab is not running, 4 busy: another \
            command uses the console, which it names; 1 the console or agent is unusable, 2 bad usage). \
            On a terminal, control characters and escape sequences in the output are shown \
            escaped (\\x1b); to a pipe or file the output is passed on as received. \
            --json prints {"exit_status", "output", "error_output", "truncated", \
            "duration_seconds"} instead (exit status as without it).
            """)

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
    @Option(help: "Seconds the command may run (after --ready's wait, which has the guest's boot_timeout).") var timeout: Double = 60
    @Option(name: [.customLong("via"), .customLong("transport")], help: "auto (agent if the lab has one, else console), agent, or console.") var via: GuestTransport = .auto
    @Flag(help: "First wait until the guest is ready (its ready text, login), up to its boot_timeout.") var ready = false
    @Flag(help: "Print the command's exit status, output and duration as one JSON object.") var json = false
    @Argument(parsing: .postTerminator, help: "The command, after --.") var command: [String] = []

    func validate() throws {
        guard !command.isEmpty else { throw ValidationError("no command: give it after --, e.g. qlab exec LAB -- uname -a") }
        _ = try checkedSeconds(timeout, option: "--timeout")
    }

    func run() async throws {
        let (transport, limit) = (via, try checkedSeconds(timeout, option: "--timeout"))
        // SIGINT/SIGTERM/SIGHUP stop the command (Ctrl-C on the console) and
        // exit 130/143/129; the lab stays up.
        let (lab, ready, command, json) = (lab, ready, command, json)
        try await runCancellable("exec") { _ in
            try await Self.execute(lab: lab, transport: transport, limit: limit, ready: ready, command: command, json: json)
        }
    }

    static func execute(lab: String, transport: GuestTransport, limit: Duration, ready: Bool, command: [String], json: Bool = false) async throws {
        let result: GuestCommandResult
        // --timeout bounds the whole command, waiting for the console included; --ready's
        // wait for the ready text is the guest's boot_timeout's, and the budget starts after it.
        var budget = CommandBudget(limit)
        do {
            let runtime = try LabRuntime.locateExisting(lab)
            let probe = min(limit, .seconds(5))
            // The agent gets a quarter of the budget to answer before the console is tried.
            let session = try await GuestConnection.open(
                runtime: runtime, transport: transport, agentTimeout: min(.seconds(3), limit / 4),
                consoleOptions: GuestConsole.Options(probeTimeout: probe, recoveryAttempts: 2))
            defer { session.close() }
            // One exec (or other claimant) on the console at a time: a second is busy, naming the first.
            var claim: ConsoleClaim?
            defer { withExtendedLifetime(claim) {} }
            if let console = session as? GuestConsole {
                claim = try ConsoleClaim.take(runtime)
                // QEMU serves one console client at a time: a second one is connected but never served.
                let unusable = GuestError.consoleUnusable(
                    reason: "the shell did not answer within \(LabDuration.format(limit)): another client may hold the console (qlab console, qlab run), the guest may still be booting (use --ready), or it hangs",
                    consoleTail: console.tail())
                if ready, let record = try runtime.record {
                    let guest = try record.lab().selectGuest(record.guest)
                    try await console.waitForReady(guest, timeout: guest.bootTimeout)
                    budget = CommandBudget(limit)
                } else {
                    guard let left = budget.remaining() else { throw unusable }
                    if !(try await console.probe(timeout: min(probe, left))) {
                        // Ctrl-C and probe again only while the budget allows a round.
                        let roundFits = budget.remaining().map { $0 >= probe } ?? false
                        guard roundFits, try await console.recover() else { throw unusable }
                    }
                }
            }
            do {
                // What is left of the budget (at least a moment: the command is typed, then waited for).
                result = try await session.run(command.joined(separator: " "), timeout: max(budget.remaining() ?? .zero, .milliseconds(100)))
            } catch where Task.isCancelled {
                // The guest's command may still run: interrupt it, as a terminal would.
                if let console = session as? GuestConsole { try? console.interrupt() }
                throw CancellationError()
            }
        } catch where Task.isCancelled {
            throw error
        } catch GuestError.commandTimeout(let text, _, let recovered, let tail) {
            // The command got what was left of the budget; the user's limit is what to report.
            throw Reported("exec", GuestError.commandTimeout(command: text, seconds: limit.inSeconds, recovered: recovered, consoleTail: tail))
        } catch {
            throw Reported("exec", error)
        }
        if json {
            try printJSON(result.json)
            try passThrough(result)
            return
        }
        // To a pipe or file the output is passed on as received; a terminal gets it neutralised.
        FileHandle.standardOutput.write(Data((ThisProcess.isTerminal(.standardOutput) ? TerminalText.neutralised(result.output) : result.output).utf8))
        if let errorOutput = result.errorOutput {
            FileHandle.standardError.write(Data((ThisProcess.isTerminal(.standardError) ? TerminalText.neutralised(errorOutput) : errorOutput).utf8))
        }
        if result.truncated { reportError("qlab exec: part of the output was lost (it did not fit the buffer)") }
        try passThrough(result)
    }

    /// The guest command's status becomes qlab's; one a process cannot exit with
    /// (the console lost the status) is a failure of qlab's (1), said on stderr.
    static func passThrough(_ result: GuestCommandResult) throws {
        guard result.exitStatus != 0 else { return }
        guard (1...255).contains(result.exitStatus) else {
            reportError("qlab exec: the guest command's exit status is unknown (\(result.exitStatus))")
            throw Reported(.failed)
        }
        throw GuestCommandExit(status: result.exitStatus)
    }
}

/// The guest command's own exit status, passed through as qlab's (not a row of
/// the table: the guest's program chose it); the entry point exits with it.
struct GuestCommandExit: Error {
    let status: Int32
}

/// A command's time limit as a deadline: each step gets what is left.
struct CommandBudget {
    let deadline: ContinuousClock.Instant

    init(_ limit: Duration) {
        deadline = .now + limit
    }

    /// The time left, nil when none is.
    func remaining() -> Duration? {
        let left = ContinuousClock.now.duration(to: deadline)
        return left > .zero ? left : nil
    }
}
