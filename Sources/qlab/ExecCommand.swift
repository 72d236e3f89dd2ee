import ArgumentParser
import Foundation
import LabCore
import Platform
import QMP

struct ExecCommand: AsyncParsableCommand, JSONReporting {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run one command in a lab's guest: its output on stdout, its exit status as qlab's.",
        discussion: """
            The command words are joined with spaces and run by the guest's shell (sh -c), \
            through the guest agent when the lab has one and it answers, else on the serial \
            console (where stdout and stderr are one stream). Exit status: the command's; \
            124 when it did not finish within --timeout (qlab interrupts it with Ctrl-C and \
            prints the console's last lines on stderr); 125 when qlab itself failed. \
            On a terminal, control characters and escape sequences in the output are shown \
            escaped (\\x1b); to a pipe or file the output is passed on as received. \
            --json prints {"exit_status", "output", "error_output", "truncated", \
            "duration_seconds"} instead (exit status as without it).
            """)

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
    @Option(help: "Seconds the command may run.") var timeout: Double = 60
    @Option(help: "auto (agent if the lab has one, else console), agent, or console.") var via: String = "auto"
    @Flag(help: "First wait until the guest is ready (its ready text, login), up to its boot_timeout.") var ready = false
    @Flag(help: "Print the command's exit status, output and duration as one JSON object.") var json = false
    @Argument(parsing: .postTerminator, help: "The command, after --.") var command: [String] = []

    func run() async throws {
        guard !command.isEmpty else {
            reportError("qlab exec: no command; usage: qlab exec LAB [--timeout S] -- COMMAND...")
            throw ExitCode(ExitStatus.usage.rawValue)
        }
        guard let transport = GuestTransport(rawValue: via) else {
            reportError("qlab exec: --via \(via): use auto, agent or console")
            throw ExitCode(ExitStatus.usage.rawValue)
        }
        let limit = try checkedSeconds(timeout, option: "--timeout", command: "exec")
        // SIGINT/SIGTERM/SIGHUP stop the command (Ctrl-C on the console) and
        // exit 130/143/129; the lab stays up.
        let (lab, ready, command, json) = (lab, ready, command, json)
        try await runCancellable("exec") { _ in
            try await Self.execute(lab: lab, transport: transport, limit: limit, ready: ready, command: command, json: json)
        }
    }

    static func execute(lab: String, transport: GuestTransport, limit: Duration, ready: Bool, command: [String], json: Bool = false) async throws {
        let result: GuestCommandResult
        // --timeout bounds the whole command: waiting for the console (or --ready) included.
        let budget = CommandBudget(limit)
        do {
            let runtime = try LabRuntime.locateExisting(lab)
            let probe = min(limit, .seconds(5))
            // The agent gets a quarter of the budget to answer before the console is tried.
            let session = try await GuestConnection.open(
                runtime: runtime, transport: transport, agentTimeout: min(.seconds(3), limit / 4),
                consoleOptions: GuestConsole.Options(probeTimeout: probe, recoveryAttempts: 2))
            defer { session.close() }
            if let console = session as? GuestConsole {
                // QEMU serves one console client at a time: a second one is connected but never served.
                let unusable = GuestError.consoleUnusable(
                    reason: "the shell did not answer within \(LabDuration.format(limit)): another client may hold the console (qlab console, qlab run), the guest may still be booting (use --ready), or it hangs",
                    consoleTail: console.tail())
                if ready, let record = try runtime.record {
                    let guest = try record.lab().selectGuest(record.guest)
                    guard let left = budget.remaining() else { throw unusable }
                    try await console.waitForReady(guest, timeout: left)
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
            reportError("qlab exec: \(GuestError.commandTimeout(command: text, seconds: limit.inSeconds, recovered: recovered, consoleTail: tail))")
            throw ExitCode(ExitStatus.timeout.rawValue)
        } catch {
            reportError("qlab exec: \(error)")
            // The table's codes, but 125 where others say 1: 1 would read as the command's own status.
            let code = exitCodeFor(error)
            throw code.rawValue == ExitStatus.failed.rawValue ? ExitCode(125) : code
        }
        if json {
            try printJSON(result.json)
            if result.exitStatus != 0 { throw ExitCode((0...255).contains(result.exitStatus) ? result.exitStatus : 125) }
            return
        }
        // To a pipe or file the output is passed on as received; a terminal gets it neutralised.
        FileHandle.standardOutput.write(Data((isatty(1) == 1 ? TerminalText.neutralised(result.output) : result.output).utf8))
        if let errorOutput = result.errorOutput {
            FileHandle.standardError.write(Data((isatty(2) == 1 ? TerminalText.neutralised(errorOutput) : errorOutput).utf8))
        }
        if result.truncated { reportError("qlab exec: part of the output was lost (it did not fit the buffer)") }
        if result.exitStatus != 0 {
            throw ExitCode((0...255).contains(result.exitStatus) ? result.exitStatus : 125)
        }
    }
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
