import Platform
import QMP

/// How one run of a test ended.
public enum TestOutcome: String, Sendable, CaseIterable {
    /// Exit status as expected and every `expect` text in the output.
    case passed
    /// The test ran to its end and its result was wrong.
    case failed
    /// The test did not end within its timeout.
    case timeout
    /// Something other than the test went wrong: QEMU died, a hook failed, the guest would not boot
    /// (a guest that does not boot is its own `boot` entry with this outcome).
    case error
    /// Not run because its guest did not boot: the guest's `boot` entry (an `error`) says why.
    case skipped
    /// The run was cancelled (SIGINT, SIGTERM, SIGHUP) during or before this entry.
    case cancelled
}

/// The record of one run of one test.
public struct TestResult: Sendable {
    public var entry: TestRunEntry
    public var outcome: TestOutcome
    public var duration: Double
    public var exitStatus: Int32?
    public var output: String
    /// Why it did not pass, in one or two sentences.
    public var message: String
    public var diagnoses: [Diagnosis]
    /// The last of the console, for failures.
    public var consoleTail: String
    /// Revert, attach, rescan, test, hooks: seconds each.
    public var steps: [(name: String, seconds: Double)]
    /// The PNG of the guest's screen saved when the run failed or timed out (a guest with a display):
    /// absolute here; a report file has it relative to its own directory when it is under it
    /// (``TestReport/json(relativeTo:)``), so a report and its screenshots move together.
    public var screenshot: String?
    /// The lab that ran it in a `qlab run --jobs N` run (`LAB`, `LAB-j2`, ...); nil otherwise.
    public var worker: String?
    /// QEMU's last lines on stderr when QEMU ended during this entry or its boot (an
    /// assertion, a crash; ``lastLines(of:)``); empty otherwise. `diagnoses` explain them.
    public var qemuOutput = ""
    /// When the run began (wall clock, Unix seconds); nil for entries that never started (skipped, cancelled before).
    public var startedAt: Double?
    /// What the test was: its command (`run:`; nil for a boot or a screen-only test) and what it expected.
    public var command: String?
    public var expectedStatus: Int32?
    public var expect: [String] = []
    public var screenExpect: [String] = []
    /// This run's console output (framing left out) and QEMU's log during it, copied next to the
    /// reports (``RunLogs``): absolute here, relative to the report's directory in a report file.
    public var consoleLog: String?
    public var qemuLog: String?
    /// The attempts before this one (`qlab run --retry-errors N`), oldest first: each a
    /// whole result of its own (a failed boot's has the `boot` step). This result is
    /// the last attempt; empty when the entry ran once.
    public var attempts: [TestResult] = []

    /// True when the entry ran more than once (``attempts``): its outcome is its last attempt's.
    public var retried: Bool { !attempts.isEmpty }

    public init(entry: TestRunEntry, outcome: TestOutcome, duration: Double, exitStatus: Int32? = nil, output: String = "",
                message: String = "", diagnoses: [Diagnosis] = [], consoleTail: String = "", steps: [(name: String, seconds: Double)] = []) {
        self.entry = entry
        self.outcome = outcome
        self.duration = duration
        self.exitStatus = exitStatus
        self.output = output
        self.message = message
        self.diagnoses = diagnoses
        self.consoleTail = consoleTail
        self.steps = steps
    }

    /// How much of QEMU's stderr a result keeps: its last 20 lines, at most 4 KiB.
    public static func lastLines(of qemuOutput: String) -> String {
        let lines = qemuOutput.split(separator: "\n", omittingEmptySubsequences: false).suffix(20).joined(separator: "\n")
        guard lines.utf8.count > 4096 else { return lines }
        return String(decoding: lines.utf8.suffix(4096), as: UTF8.self)
    }

    /// True for the entry that records a guest's failed boot (test name `boot`).
    public var isBoot: Bool { entry.isBoot }

    public var json: JSONValue { json(relativeTo: nil) }

    /// `screenshot` relative to `directory` when it is under it.
    public func json(relativeTo directory: String?) -> JSONValue {
        var object: JSONObject = [
            "guest": .string(entry.guest), "test": .string(entry.test), "repeat": JSONValue(entry.repeatIndex),
            "matrix_index": JSONValue(entry.matrixIndex), "outcome": .string(outcome.rawValue),
            "duration_seconds": .double(JSONTime.rounded(duration)), "exit_status": exitStatus.map { JSONValue($0) } ?? .null,
            "output": .string(output), "message": .string(message), "diagnoses": .array(diagnoses.map(\.json)),
            "console_tail": .string(consoleTail),
            "steps": .array(steps.map { ["name": .string($0.name), "seconds": .double(JSONTime.rounded($0.seconds))] }),
            "screenshot": screenshot.map { .string(ReportPaths.relative($0, to: directory)) } ?? .null,
        ]
        if let device = entry.device { object["device"] = .string(device) }
        if let worker { object["worker"] = .string(worker) }
        if !qemuOutput.isEmpty { object["qemu_output"] = .string(qemuOutput) }
        if let startedAt {
            object["started_at"] = .string(JSONTime.iso8601(startedAt))
            object["started_at_seconds"] = .double(JSONTime.rounded(startedAt))
        }
        if let command { object["command"] = .string(command) }
        if let expectedStatus { object["expected_status"] = JSONValue(expectedStatus) }
        if !expect.isEmpty { object["expect"] = .array(expect.map(JSONValue.string)) }
        if !screenExpect.isEmpty { object["screen_expect"] = .array(screenExpect.map(JSONValue.string)) }
        if let consoleLog { object["console_log"] = .string(ReportPaths.relative(consoleLog, to: directory)) }
        if let qemuLog { object["qemu_log"] = .string(ReportPaths.relative(qemuLog, to: directory)) }
        object["retried"] = .bool(retried)
        if retried {
            // Every attempt, this last one too, numbered from 1.
            object["attempts"] = .array((attempts + [self]).enumerated().map { $1.attemptJSON(number: $0 + 1, relativeTo: directory) })
        }
        return .object(object)
    }

    /// One attempt in `attempts`: what it did, when, and how long each step took.
    func attemptJSON(number: Int, relativeTo directory: String?) -> JSONValue {
        var object: JSONObject = [
            "attempt": JSONValue(number), "outcome": .string(outcome.rawValue),
            "duration_seconds": .double(JSONTime.rounded(duration)), "exit_status": exitStatus.map { JSONValue($0) } ?? .null,
            "output": .string(output), "message": .string(message), "diagnoses": .array(diagnoses.map(\.json)),
            "console_tail": .string(consoleTail),
            "steps": .array(steps.map { ["name": .string($0.name), "seconds": .double(JSONTime.rounded($0.seconds))] }),
            "screenshot": screenshot.map { .string(ReportPaths.relative($0, to: directory)) } ?? .null,
        ]
        if let startedAt {
            object["started_at"] = .string(JSONTime.iso8601(startedAt))
            object["started_at_seconds"] = .double(JSONTime.rounded(startedAt))
        }
        if let worker { object["worker"] = .string(worker) }
        if !qemuOutput.isEmpty { object["qemu_output"] = .string(qemuOutput) }
        if let consoleLog { object["console_log"] = .string(ReportPaths.relative(consoleLog, to: directory)) }
        if let qemuLog { object["qemu_log"] = .string(ReportPaths.relative(qemuLog, to: directory)) }
        return .object(object)
    }

    public init?(_ json: JSONValue) {
        guard let guest = json["guest"]?.stringValue, let test = json["test"]?.stringValue,
            let outcome = json["outcome"]?.stringValue.flatMap(TestOutcome.init(rawValue:))
        else { return nil }
        entry = TestRunEntry(guest: guest, device: json["device"]?.stringValue, test: test, repeatIndex: max(0, json["repeat"]?.intValue ?? 1), matrixIndex: json["matrix_index"]?.intValue ?? 0)
        self.outcome = outcome
        duration = json["duration_seconds"]?.doubleValue ?? 0
        exitStatus = json["exit_status"]?.intValue.flatMap { Int32(exactly: $0) }
        output = json["output"]?.stringValue ?? ""
        message = json["message"]?.stringValue ?? ""
        diagnoses = (json["diagnoses"]?.arrayValue ?? []).compactMap(Diagnosis.init(json:))
        consoleTail = json["console_tail"]?.stringValue ?? ""
        worker = json["worker"]?.stringValue
        qemuOutput = json["qemu_output"]?.stringValue ?? ""
        steps = (json["steps"]?.arrayValue ?? []).compactMap { s in
            guard let name = s["name"]?.stringValue, let seconds = s["seconds"]?.doubleValue else { return nil }
            return (name, seconds)
        }
        screenshot = json["screenshot"]?.stringValue
        startedAt = json["started_at_seconds"]?.doubleValue
        command = json["command"]?.stringValue
        expectedStatus = json["expected_status"]?.intValue.flatMap { Int32(exactly: $0) }
        expect = (json["expect"]?.arrayValue ?? []).compactMap(\.stringValue)
        screenExpect = (json["screen_expect"]?.arrayValue ?? []).compactMap(\.stringValue)
        consoleLog = json["console_log"]?.stringValue
        qemuLog = json["qemu_log"]?.stringValue
        // `attempts` lists this result last: the ones before it are its earlier attempts.
        let attempts = (json["attempts"]?.arrayValue ?? []).dropLast().map { attempt -> TestResult in
            var fields = attempt.objectValue ?? [:]
            for key in ["guest", "test", "repeat", "matrix_index", "device"] { fields[key] = json[key] }
            return TestResult(.object(fields)) ?? TestResult(entry: entry, outcome: .error, duration: 0, message: "an unreadable attempt")
        }
        self.attempts = Array(attempts)
    }

    /// The files a result names (screenshot, logs) made absolute against `directory` (a report file's).
    func resolvingPaths(from directory: String) -> TestResult {
        var result = self
        result.screenshot = screenshot.map { ReportPaths.absolute($0, from: directory) }
        result.consoleLog = consoleLog.map { ReportPaths.absolute($0, from: directory) }
        result.qemuLog = qemuLog.map { ReportPaths.absolute($0, from: directory) }
        result.attempts = attempts.map { $0.resolvingPaths(from: directory) }
        return result
    }
}

/// One boot of a guest during a run (a restart after a crash is another).
public struct GuestBoot: Sendable {
    public var guest: String
    /// Wall clock, Unix seconds.
    public var startedAt: Double
    public var seconds: Double
    /// False when the guest did not boot (its `boot` result says why).
    public var ready: Bool

    public init(guest: String, startedAt: Double, seconds: Double, ready: Bool) {
        self.guest = guest
        self.startedAt = startedAt
        self.seconds = seconds
        self.ready = ready
    }

    public var json: JSONValue {
        ["guest": .string(guest), "started_at": .string(JSONTime.iso8601(startedAt)),
         "started_at_seconds": .double(JSONTime.rounded(startedAt)), "seconds": .double(JSONTime.rounded(seconds)), "ready": .bool(ready)]
    }

    public init?(_ json: JSONValue) {
        guard let guest = json["guest"]?.stringValue, let seconds = json["seconds"]?.doubleValue else { return nil }
        self.init(guest: guest, startedAt: json["started_at_seconds"]?.doubleValue ?? 0, seconds: seconds, ready: json["ready"]?.boolValue ?? true)
    }
}

/// A whole run's results: what `--json-report` writes and `qlab report merge` reads.
///
/// One vocabulary everywhere (``TestOutcome``): the summary line, the JSON
/// `summary` and the JUnit counts are computed from the same results.
public struct TestReport: Sendable {
    public var lab: String
    /// Wall clock, Unix seconds.
    public var startedAt: Double
    public var duration: Double
    /// The machine the run ran on.
    public var hostname: String
    /// The shards this report covers ("1/3"), empty for a whole run.
    public var shards: [String]
    public var results: [TestResult]
    /// Every boot of every guest, in order: boot time is part of the run's time.
    public var boots: [GuestBoot]
    /// The qlab that ran it (``LabCore/version``).
    public var qlabVersion: String
    /// QEMU's `query-version` of the first boot ("7.2.0 (Debian 1:7.2+dfsg-7+deb12u18)"); nil when nothing booted.
    public var qemuVersion: String?
    /// The accelerator of the first boot (`kvm`, `tcg`); nil when nothing booted.
    public var accelerator: String?
    /// What the run tested (``RunLabel``), in order.
    public var labels: [RunLabel] = []
    /// The run's before_all and after_all hooks, as they ran.
    public var runHooks: [RunHookResult] = []
    /// The report file this was read from (nil for a run's own report): the history links to it.
    public var path: String?

    public init(lab: String, startedAt: Double, duration: Double, hostname: String = HostName.current(), shards: [String],
                results: [TestResult], boots: [GuestBoot] = [], qlabVersion: String = LabCore.version, qemuVersion: String? = nil,
                accelerator: String? = nil) {
        self.qlabVersion = qlabVersion
        self.qemuVersion = qemuVersion
        self.accelerator = accelerator
        self.lab = lab
        self.startedAt = startedAt
        self.duration = duration
        self.hostname = hostname
        self.shards = shards
        self.results = results
        self.boots = boots
    }

    public func count(_ outcome: TestOutcome) -> Int { results.filter { $0.outcome == outcome }.count }
    public var allPassed: Bool { !results.isEmpty && results.allSatisfy { $0.outcome == .passed } && runHooks.allSatisfy(\.succeeded) }
    /// True when some entry was cancelled (and so the run did not finish).
    public var wasCancelled: Bool { count(.cancelled) > 0 }

    /// What the run's exit status says to CI (docs/reports.md, "Exit status"):
    /// 0 when every entry passed; 1 when a test failed or timed out (a test's
    /// fault wins over any error beside it) or nothing ran; 5 when what is
    /// left is infrastructure: errors (after their retries) and the entries
    /// they kept from running (`skipped`). A cancelled run exits with its
    /// signal's status instead (the command's, not the report's).
    public var verdict: ExitStatus {
        if allPassed { return .success }
        if results.isEmpty || count(.failed) + count(.timeout) + count(.cancelled) > 0 { return .failed }
        return .infrastructure
    }

    /// How each outcome is said in the summary line, in its order.
    static func phrase(_ outcome: TestOutcome, _ n: Int) -> String {
        switch outcome {
        case .passed: return "\(n) passed"
        case .failed: return "\(n) failed"
        case .timeout: return "\(n) timed out"
        case .error: return "\(n) error\(n == 1 ? "" : "s")"
        case .skipped: return "\(n) skipped"
        case .cancelled: return "\(n) cancelled"
        }
    }

    /// Each non-zero count, e.g. "1 passed, 1 failed, 1 timed out"; "no runs" for none.
    public var summaryLine: String {
        let parts = TestOutcome.allCases.compactMap { outcome in count(outcome) > 0 ? Self.phrase(outcome, count(outcome)) : nil }
        let hooks = runHooks.filter { !$0.succeeded && $0.hook == "after_all" }.map { "; after_all hook \($0.outcome.rawValue == "cancelled" ? "cancelled" : "failed")" }
        return (parts.isEmpty ? "no runs" : parts.joined(separator: ", ")) + hooks.joined()
    }

    /// The JSON `summary`: `total` and one count per outcome (zeros included).
    public var summaryJSON: JSONValue {
        var summary: [(String, JSONValue)] = [("total", JSONValue(results.count))]
        for outcome in TestOutcome.allCases { summary.append((outcome.rawValue, JSONValue(count(outcome)))) }
        // Good boots only, as in JUnit: a failed boot's time is its `boot` entry's duration.
        summary.append(("boot_seconds", .double(JSONTime.rounded(boots.filter(\.ready).reduce(0) { $0 + $1.seconds }))))
        return .object(JSONObject(summary))
    }

    public var json: JSONValue { json(relativeTo: nil) }

    /// The report as written to a file in `directory`: screenshot paths relative to it when under it.
    public func json(relativeTo directory: String?) -> JSONValue {
        .object([
            "lab": .string(lab), "hostname": .string(hostname),
            "qlab_version": .string(qlabVersion), "qemu_version": qemuVersion.map(JSONValue.string) ?? .null,
            "accelerator": accelerator.map(JSONValue.string) ?? .null,
            "started_at": .string(JSONTime.iso8601(startedAt)), "started_at_seconds": .double(JSONTime.rounded(startedAt)),
            "duration_seconds": .double(JSONTime.rounded(duration)),
            "shards": .array(shards.map(JSONValue.string)),
            "summary": summaryJSON,
            "boots": .array(boots.map(\.json)),
            "results": .array(results.map { $0.json(relativeTo: directory) }),
            "labels": .object(JSONObject(labels.map { ($0.key, JSONValue.string($0.value)) })),
            "run_hooks": .array(runHooks.map(\.json)),
        ])
    }

    /// Why a report file was not read. Every case is bad input (exit 2): the
    /// same file gives the same error and status in `report html` and `report merge`.
    public enum ReadError: Error, Sendable, CustomStringConvertible {
        case noSuchFile(String)
        /// Not read (a directory, permissions, a read error), or not JSON (empty, truncated): why.
        case unreadable(String, why: String)
        /// Larger than the most qlab reads of a report.
        case tooLarge(String, limit: Int)
        case notAReport(String)
        case differentLabs(String, String)
        case overlapping(String, guest: String, test: String, repeatIndex: Int)

        public var description: String {
            switch self {
            case .noSuchFile(let path): return "\(path): no such file"
            case .unreadable(let path, let why): return "\(path): \(why)"
            case .tooLarge(let path, let limit):
                return "\(path): larger than \(InputFile.describe(bytes: limit)), the most qlab reads of a report: is it a run report?"
            case .notAReport(let path): return "\(path): not a qlab run report (no lab/results)"
            case .differentLabs(let a, let b): return "reports of different labs cannot merge: \(a) and \(b)"
            case .overlapping(let path, let guest, let test, let n): return "\(path): \(guest)/\(test)#\(n) is already in another report (overlapping shards?)"
            }
        }

        /// Bad input, whichever it is: 2.
        public var exitStatus: ExitStatus { .usage }
    }

    /// The most bytes qlab reads of one report. Reports grow with runs: 1,000 runs
    /// with their output and console tails are a few MiB, a night of a large
    /// matrix with long tails tens of MiB; jansson holds the document in memory
    /// (a few times its size), so the bound stays well under a host's RAM.
    public static let maximumFileBytes = 256 << 20

    /// The report's JSON object, or the ``ReadError`` that says what is wrong with the file.
    static func readJSON(path: String) throws(ReadError) -> JSONValue {
        let bytes: [UInt8]
        switch InputFile.read(path, limit: maximumFileBytes) {
        case .success(let read): bytes = read
        case .failure(.missing): throw .noSuchFile(path)
        case .failure(.directory): throw .unreadable(path, why: "a directory, not a report file")
        case .failure(.notAFile): throw .unreadable(path, why: "not a file (a socket or a block device)")
        case .failure(.open(let error)): throw .unreadable(path, why: "cannot open it: \(error)")
        case .failure(.read(let error)): throw .unreadable(path, why: "cannot read it: \(error)")
        case .failure(.tooLarge(let limit)): throw .tooLarge(path, limit: limit)
        }
        guard !bytes.isEmpty else { throw .unreadable(path, why: "empty (0 bytes): not a run report") }
        let json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch {
            throw .unreadable(path, why: "cannot read it as JSON (\(error.kind == .truncated ? "truncated: " : "")\(error))")
        }
        guard case .object = json else { throw .notAReport(path) }
        return json
    }

    public init(path: String) throws {
        let json = try Self.readJSON(path: path)
        guard let lab = json["lab"]?.stringValue, let resultsJSON = json["results"]?.arrayValue else { throw ReadError.notAReport(path) }
        // Screenshots are named relative to the report's directory: absolute from here on.
        let directory = ReportPaths.directory(of: path)
        let results = resultsJSON.compactMap(TestResult.init).map { $0.resolvingPaths(from: directory) }
        // Reports before 0.x carried `started_at` as Unix seconds.
        let started = json["started_at_seconds"]?.doubleValue ?? json["started_at"]?.doubleValue ?? 0
        self.init(lab: lab, startedAt: started, duration: json["duration_seconds"]?.doubleValue ?? 0,
                  hostname: json["hostname"]?.stringValue ?? "",
                  shards: json["shards"]?.arrayValue?.compactMap(\.stringValue) ?? [], results: results,
                  boots: (json["boots"]?.arrayValue ?? []).compactMap(GuestBoot.init),
                  qlabVersion: json["qlab_version"]?.stringValue ?? "", qemuVersion: json["qemu_version"]?.stringValue,
                  accelerator: json["accelerator"]?.stringValue)
        labels = (json["labels"]?.objectValue ?? JSONObject()).compactMap { key, value in value.stringValue.map { RunLabel(key: key, value: $0) } }
        runHooks = (json["run_hooks"]?.arrayValue ?? []).compactMap(RunHookResult.init)
        self.path = FileSystem.absolute(path)
    }

    /// Merges shard reports into one, in matrix order. Refuses overlaps and mixed labs.
    public static func merge(paths: [String]) throws -> TestReport {
        var merged: TestReport?
        var seen: Set<String> = []
        for path in paths {
            let report = try TestReport(path: path)
            for result in report.results {
                // A boot entry is named after the matrix entry it booted for: shards never share one.
                let key = "\(result.entry.guest)\u{0}\(result.entry.test)\u{0}\(result.entry.repeatIndex)\u{0}\(result.entry.matrixIndex)"
                guard seen.insert(key).inserted else {
                    throw ReadError.overlapping(path, guest: result.entry.guest, test: result.entry.test, repeatIndex: result.entry.repeatIndex)
                }
            }
            if var current = merged {
                guard current.lab == report.lab else { throw ReadError.differentLabs(current.lab, report.lab) }
                current.results += report.results
                current.boots += report.boots
                current.shards += report.shards
                current.startedAt = min(current.startedAt, report.startedAt)
                current.duration = max(current.duration, report.duration)
                current.qemuVersion = current.qemuVersion ?? report.qemuVersion
                current.accelerator = current.accelerator ?? report.accelerator
                // Shards of one run carry the same labels; a key only some carry is kept.
                current.labels = RunLabel.merged(file: report.labels, command: current.labels)
                current.runHooks += report.runHooks
                merged = current
            } else {
                merged = report
            }
        }
        guard var result = merged else { throw ReadError.notAReport("(no reports given)") }
        // A boot entry comes before the entry it booted for.
        result.results.sort { ($0.entry.matrixIndex, $0.isBoot ? 0 : 1) < ($1.entry.matrixIndex, $1.isBoot ? 0 : 1) }
        result.boots.sort { $0.startedAt < $1.startedAt }
        return result
    }

    /// The shards ("2/4") a merge of shard reports lacks: for each shard count N
    /// seen in the reports, the K in 1...N that no report covers. Empty for whole runs.
    public var missingShards: [String] {
        let present = Set(shards.compactMap(Shard.init))
        let counts = Set(present.map(\.count)).sorted()
        return counts.flatMap { n in
            (1...n).compactMap { k in present.contains { $0.index == k && $0.count == n } ? nil : "\(k)/\(n)" }
        }
    }
}

/// A report that cannot be read or merged is bad input (its ``TestReport/ReadError/exitStatus``).
extension TestReport.ReadError: ExitStatusCarrying {}

/// How a run's before_all or after_all hook ran.
public struct RunHookResult: Sendable {
    /// `before_all` or `after_all`.
    public var hook: String
    /// `passed`, `error` (a failure or timeout) or `cancelled`.
    public var outcome: TestOutcome
    public var seconds: Double
    /// Why it did not pass; empty when it did.
    public var message: String
    public var output: String

    public init(hook: String, outcome: TestOutcome, seconds: Double, message: String = "", output: String = "") {
        self.hook = hook
        self.outcome = outcome
        self.seconds = seconds
        self.message = message
        self.output = output
    }

    public var succeeded: Bool { outcome == .passed }

    public var json: JSONValue {
        ["hook": .string(hook), "outcome": .string(outcome.rawValue), "seconds": .double(JSONTime.rounded(seconds)),
         "message": .string(message), "output": .string(output)]
    }

    public init?(_ json: JSONValue) {
        guard let hook = json["hook"]?.stringValue, let outcome = json["outcome"]?.stringValue.flatMap(TestOutcome.init(rawValue:)) else { return nil }
        self.init(hook: hook, outcome: outcome, seconds: json["seconds"]?.doubleValue ?? 0,
                  message: json["message"]?.stringValue ?? "", output: json["output"]?.stringValue ?? "")
    }
}
