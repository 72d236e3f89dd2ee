import Platform
import QMP

/// One check of a step: what was asserted on qlab's output, and whether it held.
public struct NestedCheck: Sendable, Hashable {
    public var what: String
    public var passed: Bool
    /// What was seen when the check failed (an excerpt of the output).
    public var seen: String?

    public var json: JSONValue {
        var object: JSONObject = ["what": .string(what), "passed": .bool(passed)]
        if let seen { object["seen"] = .string(seen) }
        return .object(object)
    }
}

/// One shell command typed on L1's console, what it printed and what was checked.
public struct NestedStep: Sendable, Hashable {
    /// The command as typed (`qlab` is a shell function for the host's qlab binary).
    public var command: String
    public var exitStatus: Int32?
    /// Standard output and standard error, as the console carried them.
    public var output: String
    public var duration: Duration
    public var checks: [NestedCheck]
    /// Clean-up after the scenario (not part of what it proves).
    public var cleanup: Bool
    /// The step could not run to its end (a timeout, a lost console).
    public var error: String?

    public var passed: Bool { error == nil && checks.allSatisfy(\.passed) }

    public var json: JSONValue {
        var object: JSONObject = [
            "command": .string(command),
            "exit_status": exitStatus.map { JSONValue(Int($0)) } ?? .null,
            "duration_seconds": .seconds(duration),
            "output": .string(output),
            "checks": .array(checks.map(\.json)),
            "cleanup": .bool(cleanup),
        ]
        object["error"] = error.map(JSONValue.string) ?? .null
        return .object(object)
    }
}

/// How a scenario ended.
public enum NestedOutcome: String, Sendable, Hashable {
    case pass, fail
}

/// One scenario's run.
public struct NestedScenarioResult: Sendable {
    public var id: String
    public var title: String
    /// The L1 boot it ran in (the bench lab's guest: `bench` or `control`).
    public var boot: String
    public var outcome: NestedOutcome
    public var duration: Duration
    public var steps: [NestedStep]
    /// Why it failed, in one line, when it did.
    public var failure: String?

    public var json: JSONValue {
        [
            "id": .string(id), "title": .string(title), "boot": .string(boot),
            "outcome": .string(outcome.rawValue), "duration_seconds": .seconds(duration),
            "failure": failure.map(JSONValue.string) ?? .null,
            "steps": .array(steps.map(\.json)),
        ]
    }
}

/// One boot of L1.
public struct NestedBootRecord: Sendable {
    /// The bench lab's guest that was booted (`bench`: nointxmask=1, `control`: nointxmask=0).
    public var guest: String
    /// The scenarios run in this boot, in order.
    public var scenarios: [String]
    /// From `qlab up` of L1 to its shell answering on the console.
    public var bootDuration: Duration?
    /// From `qlab up` of L1 to L1 gone again.
    public var duration: Duration
    public var accel: String?
    /// L1's console output of this boot, kept in the run directory.
    public var consoleLog: String?
    public var error: String?

    public var json: JSONValue {
        [
            "guest": .string(guest),
            "scenarios": .array(scenarios.map(JSONValue.string)),
            "boot_seconds": bootDuration.map { .seconds($0) } ?? .null,
            "duration_seconds": .seconds(duration),
            "accel": accel.map(JSONValue.string) ?? .null,
            "console_log": consoleLog.map(JSONValue.string) ?? .null,
            "error": error.map(JSONValue.string) ?? .null,
        ]
    }
}

/// The whole run of `qlab nested run`.
public struct NestedReport: Sendable {
    public var labFile: String
    /// Where the console logs and the JSON report are kept.
    public var runDirectory: String
    public var boots: [NestedBootRecord]
    public var scenarios: [NestedScenarioResult]
    public var duration: Duration

    public var passed: Bool { !scenarios.isEmpty && scenarios.allSatisfy { $0.outcome == .pass } && boots.allSatisfy { $0.error == nil } }

    public var json: JSONValue {
        [
            "ok": .bool(passed),
            "lab_file": .string(labFile),
            "run_directory": .string(runDirectory),
            "duration_seconds": .seconds(duration),
            "passed": JSONValue(scenarios.filter { $0.outcome == .pass }.count),
            "failed": JSONValue(scenarios.filter { $0.outcome == .fail }.count),
            "boots": .array(boots.map(\.json)),
            "scenarios": .array(scenarios.map(\.json)),
        ]
    }

    /// The summary table for a terminal: one line per scenario, then the boots and the total.
    public var summary: String {
        var lines: [String] = []
        let width = max(10, scenarios.map(\.id.count).max() ?? 0)
        for scenario in scenarios {
            var line = scenario.id.padding(width) + "  " + scenario.outcome.rawValue.padding(4) + "  "
                + formatNestedSeconds(scenario.duration).leftPadding(7) + "  " + scenario.title
            if let failure = scenario.failure { line += "\n" + String(repeating: " ", count: width + 2) + "      " + "-> " + failure }
            lines.append(line)
        }
        for boot in boots {
            var line = "L1 \(boot.guest) (\(boot.scenarios.joined(separator: ", "))): boot " + (boot.bootDuration.map(formatNestedSeconds) ?? "-")
                + ", up " + formatNestedSeconds(boot.duration) + (boot.accel.map { ", \($0)" } ?? "")
            if let log = boot.consoleLog { line += ", console log " + log }
            if let error = boot.error { line += "\n  error: " + error }
            lines.append(line)
        }
        let passedCount = scenarios.filter { $0.outcome == .pass }.count
        lines.append("\(passedCount)/\(scenarios.count) scenarios passed in \(formatNestedSeconds(duration)); report in \(runDirectory)")
        return lines.joined(separator: "\n")
    }
}

/// `12.3 s`.
public func formatNestedSeconds(_ duration: Duration) -> String {
    let tenths = Int((duration.inSeconds * 10).rounded())
    return "\(tenths / 10).\(tenths % 10) s"
}

extension String {
    fileprivate func padding(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
    fileprivate func leftPadding(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
