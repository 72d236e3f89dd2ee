/// JUnit XML as Jenkins (junit plugin) and GitLab (artifacts:reports:junit)
/// read it: one `<testsuite>` per guest, one `<testcase>` per run, with
/// `<failure>` for a wrong result, `<error>` for a timeout or a broken run,
/// `<skipped message="cancelled">` for a run the cancellation stopped or never started.
public enum JUnitReport {
    public static func xml(_ report: TestReport) -> String {
        var lines = [#"<?xml version="1.0" encoding="UTF-8"?>"#]
        let failures = report.count(.failed)
        let errors = report.count(.error) + report.count(.timeout)
        let skipped = report.count(.cancelled)
        lines.append(
            #"<testsuites name="\#(escape(report.lab))" tests="\#(report.results.count)" failures="\#(failures)" errors="\#(errors)" skipped="\#(skipped)" time="\#(seconds(report.duration))">"#)
        var guests: [String] = []
        for result in report.results where !guests.contains(result.entry.guest) { guests.append(result.entry.guest) }
        for guest in guests {
            let results = report.results.filter { $0.entry.guest == guest }
            let suiteFailures = results.filter { $0.outcome == .failed }.count
            let suiteErrors = results.filter { $0.outcome == .error || $0.outcome == .timeout }.count
            let suiteSkipped = results.filter { $0.outcome == .cancelled }.count
            let time = results.reduce(0) { $0 + $1.duration }
            lines.append(
                #"  <testsuite name="\#(escape(report.lab)).\#(escape(guest))" tests="\#(results.count)" failures="\#(suiteFailures)" errors="\#(suiteErrors)" skipped="\#(suiteSkipped)" time="\#(seconds(time))">"#)
            for result in results {
                lines.append(
                    #"    <testcase classname="\#(escape(report.lab)).\#(escape(guest))" name="\#(escape(result.entry.displayName))" time="\#(seconds(result.duration))">"#)
                var detail = result.message
                for diagnosis in result.diagnoses { detail += "\n[\(diagnosis.id)] \(diagnosis.summary)\nfix: \(diagnosis.fix)" }
                if !result.consoleTail.isEmpty { detail += "\n--- console tail ---\n" + result.consoleTail }
                switch result.outcome {
                case .passed: break
                case .failed:
                    lines.append(#"      <failure message="\#(escape(result.message))" type="failed">\#(escape(detail))</failure>"#)
                case .timeout:
                    lines.append(#"      <error message="\#(escape(result.message))" type="timeout">\#(escape(detail))</error>"#)
                case .error:
                    lines.append(#"      <error message="\#(escape(result.message))" type="error">\#(escape(detail))</error>"#)
                case .cancelled:
                    lines.append(#"      <skipped message="cancelled">\#(escape(detail))</skipped>"#)
                }
                if !result.output.isEmpty {
                    lines.append("      <system-out>\(escape(result.output))</system-out>")
                }
                lines.append("    </testcase>")
            }
            lines.append("  </testsuite>")
        }
        lines.append("</testsuites>")
        return lines.joined(separator: "\n") + "\n"
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
