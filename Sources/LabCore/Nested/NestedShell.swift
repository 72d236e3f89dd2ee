import QMP

/// L1's root shell, driven over its serial console (``GuestConsole``): types a
/// command, records what it printed as a ``NestedStep``, and lets the scenario
/// check that output.
///
/// In the shell, `qlab` is a function that runs the host's own qlab binary
/// (the one running ``NestedBench``) through L1's 9p view of the host root,
/// with a runtime and state directory of its own in L1's RAM.
public final class NestedShell {
    let console: GuestConsole
    /// Where each step goes (the current scenario's list).
    private(set) var steps: [NestedStep] = []
    /// Steps already handed to `onStep`.
    private var reported = 0
    /// Commands run after the scenario whatever happened (`qlab down ...`).
    private(set) var cleanups: [String] = []
    /// Called with each finished step (live progress).
    let onStep: @Sendable (NestedStep) -> Void
    /// A default command timeout: generous, since everything in L1 runs under TCG.
    var timeout: Duration = .seconds(180)

    init(console: GuestConsole, onStep: @escaping @Sendable (NestedStep) -> Void) {
        self.console = console
        self.onStep = onStep
    }

    /// Hands the recorded steps over and starts a new list.
    func takeSteps() -> [NestedStep] {
        flush()
        defer { steps = []; reported = 0 }
        return steps
    }

    /// Reports the steps whose checks are complete: all but the one being run.
    private func flush() {
        while reported < steps.count {
            onStep(steps[reported])
            reported += 1
        }
    }

    /// Runs `command`; the step is recorded before the checks in `body` are added to it.
    /// A console error (timeout, lost connection) is recorded and rethrown.
    @discardableResult
    func run(_ command: String, timeout: Duration? = nil, cleanup: Bool = false) async throws -> NestedOutput {
        flush()
        let started = ContinuousClock.now
        do {
            let result = try await console.run(command, timeout: timeout ?? self.timeout)
            steps.append(NestedStep(command: command, exitStatus: result.exitStatus, output: result.output,
                                    duration: result.duration, checks: [], cleanup: cleanup, error: nil))
            return NestedOutput(shell: self, index: steps.count - 1, text: result.output, status: result.exitStatus)
        } catch {
            let step = NestedStep(command: command, exitStatus: nil, output: "", duration: started.duration(to: .now),
                                  checks: [], cleanup: cleanup, error: "\(error)")
            steps.append(step)
            flush()
            throw NestedFailure.console("\(error)")
        }
    }

    /// Runs `command` until `ready` holds for its output, at most `attempts` times,
    /// `pause` apart; only the last attempt is recorded (its output says how many it took).
    /// For state the guest's firmware sets up shortly after QEMU starts (L2's bridge numbers).
    @discardableResult
    func run(_ command: String, attempts: Int, pause: Duration = .seconds(2), until ready: (NestedOutput) -> Bool) async throws -> NestedOutput {
        var attempt = 1
        while true {
            let output = try await run(command)
            if ready(output) || attempt >= attempts {
                if attempt > 1 { steps[output.index].output += "\n(attempt \(attempt) of \(attempts))" }
                return output
            }
            steps.removeLast()
            attempt += 1
            // A real delay between attempts: the guest's firmware state has no event to wait on.
            try await Task.sleep(for: pause)
        }
    }

    /// Registers a clean-up command, run after the scenario (in reverse order).
    func atEnd(_ command: String) {
        if !cleanups.contains(command) { cleanups.append(command) }
    }

    /// Runs the registered clean-ups; they are steps too, but their failures fail nothing.
    func runCleanups() async throws {
        let pending = cleanups.reversed()
        cleanups = []
        for command in pending {
            try await run(command, timeout: .seconds(60), cleanup: true)
        }
    }

    fileprivate func addCheck(_ check: NestedCheck, to index: Int) {
        steps[index].checks.append(check)
    }
}

/// Why a scenario stopped early.
enum NestedFailure: Error, CustomStringConvertible {
    /// L1's console did not answer (a timeout, QEMU gone).
    case console(String)
    /// L1 did not boot.
    case boot(String)

    var description: String {
        switch self {
        case .console(let text): return "L1's console: \(text)"
        case .boot(let text): return "L1 did not boot: \(text)"
        }
    }
}

/// What one command printed, with checks recorded on its step.
struct NestedOutput {
    let shell: NestedShell
    let index: Int
    let text: String
    let status: Int32

    /// Records a check; returns whether it held.
    @discardableResult
    func check(_ what: String, _ condition: Bool, seen: @autoclosure () -> String? = nil) -> Bool {
        shell.addCheck(NestedCheck(what: what, passed: condition, seen: condition ? nil : (seen() ?? excerpt(text))), to: index)
        return condition
    }

    /// The command's exit status is `expected`.
    @discardableResult
    func exits(_ expected: Int32) -> Bool {
        check("exit status \(expected)", status == expected, seen: "exit status \(status): " + excerpt(text))
    }

    /// The command failed (any status but 0).
    @discardableResult
    func fails() -> Bool {
        check("fails (exit status not 0)", status != 0, seen: "exit status 0: " + excerpt(text))
    }

    /// The output contains `needle`.
    @discardableResult
    func prints(_ needle: String) -> Bool {
        check("prints \"\(needle)\"", text.contains(needle))
    }

    /// The output does not contain `needle`.
    @discardableResult
    func doesNotPrint(_ needle: String) -> Bool {
        check("does not print \"\(needle)\"", !text.contains(needle))
    }

    /// The output, parsed as JSON (qlab's `--json`, `qlab qmp`), or nil with a failed check.
    func json() -> JSONValue? {
        let trimmed = text.drop { $0 != "{" && $0 != "[" }
        do {
            return try JSONValue.parse(String(trimmed))
        } catch {
            check("prints JSON", false, seen: "\(error): " + excerpt(text))
            return nil
        }
    }
}

/// The first and last lines of a long text.
func excerpt(_ text: String, lines: Int = 12) -> String {
    let all = text.split(separator: "\n", omittingEmptySubsequences: false)
    if all.count <= lines { return text }
    return (all.prefix(lines / 2) + ["..."] + all.suffix(lines / 2)).joined(separator: "\n")
}
