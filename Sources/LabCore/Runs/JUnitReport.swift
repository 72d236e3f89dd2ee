/// JUnit XML as Jenkins (junit plugin) and GitLab (artifacts:reports:junit)
/// read it: one `<testsuite>` per guest (with `timestamp` and `hostname`),
/// one `<testcase>` per run. The counts are the report's (``TestReport``):
/// `failed` -> `<failure type="failed">`; `timeout` and `error` ->
/// `<error type="timeout">` / `<error type="error">`; `skipped` and
/// `cancelled` -> `<skipped>`. A guest that did not boot is a `boot` case with
/// an `<error>`; successful boots are counted in the suite's `time` and its
/// `boot_seconds` property, so a suite's time adds up. A `--jobs` run's
/// cases carry a `worker` property. In a lab with a device dimension a case's
/// class name is `LAB.GUEST.DEVICE` and it carries a `device` property.
/// Each suite carries the run's labels (`label.KEY`) and how its
/// before_all/after_all hooks ended (`hook.before_all`: `passed`, `error: ...`).
/// A case is named after its test alone, whatever the repeat (`--repeat N`
/// runs are N cases of one name, each with a `repeat` property), so CI
/// keeps one history per test (docs/reports.md says how Jenkins and GitLab
/// read cases of one name).
///
/// An entry run more than once (`qlab run --retry-errors N`) is one case
/// with an `attempts` property, its outcome its last attempt's, and its
/// earlier attempts as Maven Surefire's rerun report writes them (Jenkins'
/// junit and flaky-test-handler plugins read them): after a pass, each as
/// `<flakyFailure>` (a failed attempt) or `<flakyError>` (an error or a
/// timeout); otherwise as `<rerunFailure>` or `<rerunError>`. Each holds the
/// attempt's message and type, its details in `<stackTrace>` and its output
/// in `<system-out>`, in the order Surefire's schema has them. The case's
/// `time` is all its attempts'.
public enum JUnitReport {
    /// `attachmentsRelativeTo`: screenshot paths are written relative to this
    /// directory when under it (CI reads them relative to its checkout: the working directory).
    public static func xml(_ report: TestReport, attachmentsRelativeTo directory: String? = nil) -> String {
        var lines = [#"<?xml version="1.0" encoding="UTF-8"?>"#]
        let failures = report.count(.failed)
        let errors = report.count(.error) + report.count(.timeout)
        let skipped = report.count(.skipped) + report.count(.cancelled)
        lines.append(
            #"<testsuites name="\#(escape(report.lab))" tests="\#(report.results.count)" failures="\#(failures)" errors="\#(errors)" skipped="\#(skipped)" time="\#(seconds(report.duration))">"#)
        var guests: [String] = []
        for result in report.results where !guests.contains(result.entry.guest) { guests.append(result.entry.guest) }
        for guest in guests {
            let results = report.results.filter { $0.entry.guest == guest }
            let boots = report.boots.filter { $0.guest == guest }
            let suiteFailures = results.filter { $0.outcome == .failed }.count
            let suiteErrors = results.filter { $0.outcome == .error || $0.outcome == .timeout }.count
            let suiteSkipped = results.filter { $0.outcome == .skipped || $0.outcome == .cancelled }.count
            // A failed boot's time is its case's; a good boot's is the suite's own.
            let bootSeconds = boots.filter(\.ready).reduce(0) { $0 + $1.seconds }
            let time = results.reduce(0) { $0 + caseSeconds($1) } + bootSeconds
            let started = boots.map(\.startedAt).min() ?? report.startedAt
            lines.append(
                #"  <testsuite name="\#(escape(report.lab)).\#(escape(guest))" tests="\#(results.count)" failures="\#(suiteFailures)" errors="\#(suiteErrors)" skipped="\#(suiteSkipped)" time="\#(seconds(time))" timestamp="\#(timestamp(started))" hostname="\#(escape(report.hostname))">"#)
            lines.append("    <properties>")
            lines.append(#"      <property name="boots" value="\#(boots.count)"/>"#)
            lines.append(#"      <property name="boot_seconds" value="\#(seconds(bootSeconds))"/>"#)
            // What the run tested (`--label`, `labels:`), and how its before_all/after_all hooks ended.
            for label in report.labels {
                lines.append(#"      <property name="label.\#(escape(label.key))" value="\#(escape(label.value))"/>"#)
            }
            for hook in report.runHooks {
                let value = hook.outcome.rawValue + (hook.message.isEmpty ? "" : ": " + hook.message)
                lines.append(#"      <property name="hook.\#(escape(hook.hook))" value="\#(escape(value))"/>"#)
            }
            lines.append("    </properties>")
            for result in results {
                let device = result.entry.device.map { "." + escape($0) } ?? ""
                lines.append(
                    #"    <testcase classname="\#(escape(report.lab)).\#(escape(guest))\#(device)" name="\#(escape(result.entry.test))" time="\#(seconds(caseSeconds(result)))">"#)
                // The repeat of a `--repeat N` run (1...N; 0 for a boot): the name stays the test's.
                var properties = [#"<property name="repeat" value="\#(result.entry.repeatIndex)"/>"#]
                // The device of the lab's device dimension the run had.
                if let device = result.entry.device { properties.append(#"<property name="device" value="\#(escape(device))"/>"#) }
                // The lab that ran it in a `qlab run --jobs N` run.
                if let worker = result.worker { properties.append(#"<property name="worker" value="\#(escape(worker))"/>"#) }
                // How many times it ran (`--retry-errors`).
                if result.retried { properties.append(#"<property name="attempts" value="\#(result.attempts.count + 1)"/>"#) }
                lines.append("      <properties>" + properties.joined() + "</properties>")
                let detail = details(result)
                // Surefire's order: failure, rerunFailure, flakyFailure, skipped, error, rerunError, flakyError.
                let earlier = result.attempts.enumerated().map { (number: $0 + 1, attempt: $1) }
                let rerun = result.outcome == .passed ? "flaky" : "rerun"
                if result.outcome == .failed {
                    lines.append(#"      <failure message="\#(escape(result.message))" type="failed">\#(escape(detail))</failure>"#)
                }
                for (number, attempt) in earlier where attempt.outcome == .failed {
                    lines.append(rerunElement(rerun + "Failure", attempt, number: number, of: earlier.count + 1))
                }
                switch result.outcome {
                case .passed, .failed: break
                case .timeout:
                    lines.append(#"      <error message="\#(escape(result.message))" type="timeout">\#(escape(detail))</error>"#)
                case .error:
                    lines.append(#"      <error message="\#(escape(result.message))" type="error">\#(escape(detail))</error>"#)
                case .skipped:
                    lines.append(#"      <skipped message="\#(escape(result.message.isEmpty ? "skipped" : result.message))"/>"#)
                case .cancelled:
                    lines.append(#"      <skipped message="cancelled">\#(escape(detail))</skipped>"#)
                }
                for (number, attempt) in earlier where attempt.outcome != .failed {
                    lines.append(rerunElement(rerun + "Error", attempt, number: number, of: earlier.count + 1))
                }
                // Jenkins (junit-attachments) and GitLab read `[[ATTACHMENT|path]]` lines in system-out.
                let attachment = result.screenshot.map { "[[ATTACHMENT|\(ReportPaths.relative($0, to: directory))]]" }
                if !result.output.isEmpty || attachment != nil {
                    var out = result.output
                    if let attachment { out += (out.isEmpty || out.hasSuffix("\n") ? "" : "\n") + attachment + "\n" }
                    lines.append("      <system-out>\(escape(out))</system-out>")
                }
                lines.append("    </testcase>")
            }
            lines.append("  </testsuite>")
        }
        lines.append("</testsuites>")
        return lines.joined(separator: "\n") + "\n"
    }

    /// A case's time: all its attempts'.
    static func caseSeconds(_ result: TestResult) -> Double {
        result.attempts.reduce(result.duration) { $0 + $1.duration }
    }

    /// What a case's element says beyond its message: diagnoses, QEMU's last output, the console tail.
    static func details(_ result: TestResult) -> String {
        var detail = result.message
        for diagnosis in result.diagnoses { detail += "\n[\(diagnosis.id)] \(diagnosis.summary)\nfix: \(diagnosis.fix)" }
        if !result.qemuOutput.isEmpty { detail += "\n--- QEMU's last output ---\n" + result.qemuOutput }
        if !result.consoleTail.isEmpty { detail += "\n--- console tail ---\n" + result.consoleTail }
        return detail
    }

    /// An earlier attempt as Surefire writes a rerun: `<NAME message type>` with
    /// `<stackTrace>` (the attempt's number, time, details) and `<system-out>`.
    static func rerunElement(_ name: String, _ attempt: TestResult, number: Int, of count: Int) -> String {
        let trace = "attempt \(number) of \(count): \(attempt.outcome.rawValue) after \(seconds(attempt.duration)) s"
            + (attempt.worker.map { " on \($0)" } ?? "") + "\n" + details(attempt)
        var element = #"      <\#(name) message="\#(escape(attempt.message))" type="\#(attempt.outcome.rawValue)"><stackTrace>\#(escape(trace))</stackTrace>"#
        if !attempt.output.isEmpty { element += "<system-out>\(escape(attempt.output))</system-out>" }
        return element + "</\(name)>"
    }

    /// JUnit's `timestamp`: ISO 8601 without a zone (the schema's xs:dateTime
    /// form Jenkins reads), in UTC.
    static func timestamp(_ seconds: Double) -> String {
        String(JSONTime.iso8601(seconds).prefix(19))
    }

    static func seconds(_ value: Double) -> String {
        // Durations come back from report files too: nothing out of range may trap.
        let milliseconds = (value * 1000).rounded()
        guard milliseconds.isFinite, milliseconds >= 0, milliseconds < 1e15 else { return "0.000" }
        let millis = Int(milliseconds)
        let fraction = String(millis % 1000)
        return "\(millis / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }

    /// XML text and attribute escaping; control characters XML 1.0 forbids become U+FFFD.
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\t", "\n", "\r": out.unicodeScalars.append(scalar)
            default:
                if scalar.value < 0x20 || (0xFFFE...0xFFFF).contains(scalar.value) {
                    out += "\u{FFFD}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }
}
