import ArgumentParser
import Foundation
import LabCore
import Platform
import QMP

/// `qlab run LAB ...`: the test matrix.
struct RunCommand: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a lab's tests on its guests: revert to a clean snapshot before every run.",
        discussion: "Exit 0 when every test passed; 1 when a test failed or timed out; 5 when no test failed but infrastructure errors were left after the retries (--retry-errors). Reports: --junit FILE (Jenkins, GitLab) and --json-report FILE (merge shards with `qlab report merge`); --json prints the JSON report on stdout (progress then goes to stderr).")

    @Argument(help: "The lab file, or the name of a lab started before (its last lab file).", completion: Completions.lab) var lab: String
    @Option(name: .customLong("guest"), help: "A guest to run on (repeatable; default: all).", completion: Completions.run(.guest)) var guests: [String] = []
    @Option(name: .customLong("test"), help: "A test to run (repeatable; default: all).", completion: Completions.run(.test)) var tests: [String] = []
    @Option(name: .customLong("device"), help: "A device of the lab's device dimension (`matrix: {devices: ...}`) to run with (repeatable; default: all).", completion: Completions.run(.device)) var devices: [String] = []
    @Option(name: .customLong("repeat"), help: "Run each test N times.") var repeats = 1
    @Option(help: ArgumentHelp("Run the K-th of N parts of the matrix (1 <= K <= N), e.g. 2/4; auto: from QLAB_SHARD=K/N or GitLab's CI_NODE_INDEX/CI_NODE_TOTAL (the whole matrix when neither is set).", valueName: "K/N|auto")) var shard: ShardArgument?
    @Option(help: ArgumentHelp("Write a JUnit XML report to FILE.", valueName: "FILE")) var junit: String?
    @Option(help: ArgumentHelp("Write the JSON report to FILE.", valueName: "FILE")) var jsonReport: String?
    @Option(help: ArgumentHelp("Write the HTML report (one self-contained page) to FILE.", valueName: "FILE")) var html: String?
    @Flag(help: "Print the JSON report on stdout (progress and the summary go to stderr).") var json = false
    @Option(name: [.customLong("transport"), .customLong("via")], help: "How to run commands in the guest: auto, console or agent.") var transport: GuestTransport = .auto
    @Option(help: "Run the matrix on N guests at once: the lab and N-1 clones of its ready snapshot (emulated devices and the fast revert only).")
    var jobs = 1
    @Option(help: ArgumentHelp("Run an entry whose outcome is `error` (QEMU died, the guest did not boot, a hook failed) up to N more times, from a fresh revert (a fresh boot when the guest broke); every attempt is kept in the reports.", valueName: "N"))
    var retryErrors = 0
    @Option(help: ArgumentHelp("The outcomes --retry-errors reruns, comma-separated: error (the default), timeout, failed.", valueName: "OUTCOMES"))
    var retryOn: RetryOutcomes?
    @OptionGroup var wait: WaitOptions
    @Option(name: .customLong("label"), help: ArgumentHelp("A label of what the run tests, KEY=VALUE (repeatable; over the lab file's `labels:`): in every report and in the hooks' environment as QLAB_LABEL_KEY.", valueName: "KEY=VALUE"))
    var labels: [String] = []

    /// `--label` values as labels; a malformed one is a usage error (exit 2) naming it.
    func checkedLabels() throws(ValidationError) -> [RunLabel] {
        var parsed: [RunLabel] = []
        for argument in labels {
            switch RunLabel.parse(argument) {
            case .success(let label): parsed.append(label)
            case .failure(let error): throw ValidationError(error.description)
            }
        }
        return parsed
    }

    func validate() throws {
        _ = try checkedLabels()
        _ = try checkedCount(repeats, in: 1...UserNumbers.maximumCount, option: "--repeat")
        _ = try checkedCount(jobs, in: 1...TestRunner.maximumJobs, option: "--jobs")
        _ = try checkedCount(retryErrors, in: 0...TestRunner.maximumRetries, option: "--retry-errors")
        if retryOn != nil && retryErrors == 0 {
            throw ValidationError("--retry-on needs --retry-errors N (how many times to run an entry again)")
        }
    }

    func run() async throws {
        var options = TestRunner.Options()
        options.guests = guests
        options.tests = tests
        options.devices = devices
        options.labels = try checkedLabels()
        options.repeats = try checkedCount(repeats, in: 1...UserNumbers.maximumCount, option: "--repeat")
        switch shard {
        case .auto:
            do {
                let choice = try ShardChoice.auto(ProcessInfo.processInfo.environment)
                options.shard = choice.shard
                // Which shard this job is, and why: first in the CI log (stderr with --json).
                let line = "qlab run: " + choice.line
                if json { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { print(line) }
            } catch {
                throw Reported("run", error)
            }
        case .part(let part): options.shard = part
        case nil: break
        }
        options.transport = transport
        options.wait = wait.policy
        options.screenshotDirectory = screenshotDirectory
        options.jobs = try checkedCount(jobs, in: 1...TestRunner.maximumJobs, option: "--jobs")
        options.retries = try checkedCount(retryErrors, in: 0...TestRunner.maximumRetries, option: "--retry-errors")
        if let retryOn { options.retryOn = retryOn.outcomes }
        let (lab, json, jsonReport, junit, html) = (lab, json, jsonReport, junit, html)
        // A report path qlab will not write (a directory, a link it does not follow) is refused now, not after the run.
        do {
            for path in [jsonReport, junit, html].compactMap({ $0 }) { _ = try OutputFile.target(path) }
        } catch {
            throw Reported("run", error)
        }
        // SIGINT/SIGTERM/SIGHUP: the runner stops, takes the lab down and
        // returns the runs so far (the rest cancelled); the reports are written.
        try await runCancellable("run") { [options] stop in
            var options = options
            options.stop = stop
            // With --json, stdout carries only the report: progress goes to stderr.
            let interactive = ThisProcess.isTerminal(json ? .standardError : .standardOutput)
            let report: TestReport
            do {
                report = try await withStandardOutputOnStandardError(json) {
                    let progress = RunProgress(interactive: interactive)
                    defer { progress.finishLine() }
                    let runner = try TestRunner(controller: labController(), labFile: LabRuntime.labFile(for: lab), options: options) { progress.handle($0) }
                    try runner.checkLoops()
                    return try await runner.run()
                }
            } catch {
                if stop.isRequested { return }
                throw Reported("run", error)
            }
            do {
                try Self.write(report, jsonReport: jsonReport, junit: junit, html: html)
            } catch {
                throw Reported("run", error)
            }
            if json {
                try printJSON(report.json)
                reportError(report.summaryLine)
            } else {
                print(report.summaryLine)
            }
            // A shard with nothing in it (more CI jobs than matrix entries) did all it had to.
            let emptyShard = report.results.isEmpty && !report.shards.isEmpty
            // 1 for a test's failure, 5 for infrastructure errors only (TestReport.verdict).
            if !emptyShard && report.verdict != .success { throw Reported(report.verdict) }
        }
    }
}

extension RunCommand {
    /// The screenshots of failed runs go next to the reports: the directory of the first report file given.
    var screenshotDirectory: String? {
        [jsonReport, junit, html].compactMap { $0 }.first.map(ReportPaths.directory(of:))
    }

    /// Writes the report files asked for (0644): JSON with screenshots relative to its
    /// directory, JUnit with attachment paths relative to the working directory.
    static func write(_ report: TestReport, jsonReport: String?, junit: String?, html: String?) throws {
        if let jsonReport { try OutputFile.writeJSON(jsonReport, report.json(relativeTo: ReportPaths.directory(of: jsonReport))) }
        if let junit {
            let xml = JUnitReport.xml(report, attachmentsRelativeTo: ReportPaths.workingDirectory)
            try OutputFile.write(junit, Array(xml.utf8))
        }
        if let html {
            let page = HTMLReport.html([report], directory: ReportPaths.directory(of: html)) { result in result.screenshot.flatMap(HTMLReport.screenshotBytes) }
            try OutputFile.write(html, Array(page.utf8))
        }
    }
}

/// Progress: on a TTY a live line (ticking "booting linux 00:07" while a
/// guest boots; run i of n, guest, test, elapsed, ETA while tests run), and
/// without one a plain line when each guest is ready or did not boot, so a
/// CI log shows where the time goes. Results always get a line; every line is
/// written (write(2)) as soon as it is complete.
final class RunProgress: @unchecked Sendable {
    let interactive: Bool
    let lock = NSLock()
    let start = Date()
    var total = 0
    var finished = 0
    var durations: [Double] = []
    var liveLine = false
    /// The guest booting and since when: the ticker redraws its line.
    var booting: (guest: String, since: Date)?
    var ticker: Task<Void, Never>?
    /// The entry running, redrawn after a boot's line.
    var current: String?

    init(interactive: Bool) { self.interactive = interactive }

    deinit { ticker?.cancel() }

    func handle(_ event: TestRunEvent) {
        lock.lock()
        defer { lock.unlock() }
        switch event {
        case .started(let total):
            self.total = total
            line("qlab run: \(total) run\(total == 1 ? "" : "s")")
        case .guestBooting(let guest):
            booting = (guest, Date())
            drawBooting()
            startTicker()
        case .guestReady(let guest, let seconds):
            booting = nil
            line(String(format: "guest %@ ready in %.1f s", guest, seconds))
            if let current { live(current) }
        case .guestBootFailed(let guest, let seconds, let reason):
            booting = nil
            let prefix = "guest \(guest) did not boot: "
            line(String(format: "guest %@ did not boot (%.1f s): ", guest, seconds) + (reason.hasPrefix(prefix) ? String(reason.dropFirst(prefix.count)) : reason))
        case .entryStarted(let entry, let index, let total):
            current = "[\(index)/\(total)] \(entry.guest) " + (entry.device.map { $0 + " " } ?? "") + entry.displayName
            if booting == nil { live(current!) }
        case .entryFinished(let result, _, let total):
            current = nil
            // Numbered as printed: under --jobs entries finish out of their start order.
            finished += 1
            durations.append(result.duration)
            var text = String(format: "[%d/%d] %@ %@: %@ (%.1f s)", finished, total, result.entry.guest + (result.entry.device.map { " " + $0 } ?? ""), result.entry.displayName,
                              result.outcome.rawValue.uppercased(), result.duration)
            if let worker = result.worker { text += " on " + worker }
            if result.retried { text += " (attempt \(result.attempts.count + 1))" }
            if result.outcome != .passed, !result.message.isEmpty { text += "\n    " + result.message }
            for diagnosis in result.diagnoses { text += "\n    [\(diagnosis.id)] \(diagnosis.summary) fix: \(diagnosis.fix)" }
            line(text)
        case .note(let text):
            line("note: " + text)
        }
    }

    /// "booting linux 00:07" (TTY only; lock held).
    func drawBooting() {
        guard let booting else { return }
        live("booting \(booting.guest) " + Self.clock(Date().timeIntervalSince(booting.since)), showElapsed: false)
    }

    /// Redraws the booting line once a second while a guest boots (TTY only).
    func startTicker() {
        guard interactive, ticker == nil else { return }
        ticker = Task.detached { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                guard let self else { return }
                self.lock.withLock { self.drawBooting() }
            }
        }
    }

    /// A status line that the next output replaces (TTY only; lock held).
    func live(_ text: String, showElapsed: Bool = true) {
        guard interactive else { return }
        let elapsed = Date().timeIntervalSince(start)
        var eta = ""
        if finished > 0, total > finished {
            let perRun = durations.reduce(0, +) / Double(durations.count)
            eta = "  ETA " + Self.clock(perRun * Double(total - finished))
        }
        let status = TerminalText.neutralised(text, keepingLines: false) + (showElapsed ? "  elapsed \(Self.clock(elapsed))\(eta)" : "")
        FileHandle.standardOutput.write(Data(("\r\u{1B}[K" + status).utf8))
        liveLine = true
    }

    func line(_ text: String) {
        if liveLine { FileHandle.standardOutput.write(Data("\r\u{1B}[K".utf8)) }
        liveLine = false
        FileHandle.standardOutput.write(Data((TerminalText.neutralised(text) + "\n").utf8))
    }

    func finishLine() {
        lock.lock()
        defer { lock.unlock() }
        ticker?.cancel()
        ticker = nil
        booting = nil
        if liveLine { FileHandle.standardOutput.write(Data("\r\u{1B}[K".utf8)) }
        liveLine = false
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return String(format: "%02d:%02d", s / 60, s % 60)
    }
}

struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Work with run reports.", subcommands: [Merge.self, HTML.self])

    struct HTML: AsyncParsableCommand, UsesGlobalOptions {
        @OptionGroup(title: "Global options") var global: GlobalOptions
        static let configuration = CommandConfiguration(
            commandName: "html",
            abstract: "Write one self-contained HTML page from JSON reports (several: a history, oldest to newest).",
            discussion: "The matrix and the runs are the newest report's; each report (night) is a column of the history. Merge shards first (`qlab report merge`).")
        @Argument(help: "JSON reports from `qlab run --json-report FILE` or `qlab report merge`.") var reports: [String]
        @Option(name: [.short, .customLong("output")], help: ArgumentHelp("Write the page to FILE (default: stdout).", valueName: "FILE")) var output: String?

        func validate() throws {
            guard !reports.isEmpty else { throw ValidationError("give one or more JSON reports") }
        }

        func run() async throws {
            do {
                let page = try HTMLReport.html(reportFiles: reports, output: output)
                if let output {
                    try OutputFile.write(output, Array(page.utf8))
                    reportError("wrote \(output) (\(reports.count) report\(reports.count == 1 ? "" : "s"))")
                } else {
                    print(page, terminator: "")
                }
            } catch {
                throw Reported("report html", error)
            }
        }
    }

    struct Merge: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
        @OptionGroup(title: "Global options") var global: GlobalOptions
        static let configuration = CommandConfiguration(
            commandName: "merge", abstract: "Merge the JSON reports of shards into one (refuses overlaps).")
        @Argument(help: "JSON reports from `qlab run --json-report FILE` (or `--json > FILE`).") var reports: [String]
        @Option(help: ArgumentHelp("Write the merged JSON report to FILE (then stdout gets it only with --json).", valueName: "FILE")) var jsonReport: String?
        @Option(help: ArgumentHelp("Write a JUnit XML report of the merge to FILE.", valueName: "FILE")) var junit: String?
        @Flag(help: "Print the merged JSON report on stdout (the default without --json-report).") var json = false
        @Flag(help: "Merge even when shards are missing (exit 1 otherwise).") var partial = false

        func run() async throws {
            do {
                let merged = try TestReport.merge(paths: reports)
                let missing = merged.missingShards
                if !missing.isEmpty && !partial {
                    reportError("qlab report merge: shard\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")) missing; "
                        + "give every shard's report, or --partial to merge what is here")
                    throw Reported(.failed)
                }
                if let jsonReport { try OutputFile.writeJSON(jsonReport, merged.json(relativeTo: ReportPaths.directory(of: jsonReport))) }
                if json || jsonReport == nil { try printJSON(merged.json) }
                if let junit {
                    try OutputFile.write(junit, Array(JUnitReport.xml(merged, attachmentsRelativeTo: ReportPaths.workingDirectory).utf8))
                }
                reportError("merged \(reports.count) report\(reports.count == 1 ? "" : "s"): \(merged.summaryLine)"
                    + (missing.isEmpty ? "" : " (partial: shard\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")) missing)"))
                // The run's verdict, over the shards: 1 for a test's failure, 5 for infrastructure errors only.
                if merged.verdict != .success { throw Reported(merged.verdict) }
            } catch let error as Reported {
                throw error
            } catch {
                throw Reported("report merge", error)
            }
        }
    }
}
