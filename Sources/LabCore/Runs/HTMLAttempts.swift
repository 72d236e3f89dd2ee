/// The HTML report's list of an entry's attempts (`qlab run --retry-errors N`):
/// under the run's summary, one line per attempt, oldest first, the last
/// being the run shown: its outcome, time, message, steps, and where it ran.
/// Self-contained (its own inline style) so the page's stylesheet may change.
extension HTMLReport {
    static func attemptsList(_ result: TestResult, into page: inout HTMLPage) {
        guard result.retried else { return }
        let all = result.attempts + [result]
        page.raw("<ol class=\"attempts\" data-attempts=\"\(all.count)\" style=\"margin:.3em 0;padding-left:1.6em;font-size:.9em\">\n")
        for (number, attempt) in all.enumerated().map({ ($0 + 1, $1) }) {
            let steps = attempt.steps.map { "\(escape($0.name)) \(formatSeconds($0.seconds))" }.joined(separator: ", ")
            page.raw("<li data-attempt=\"\(number)\" data-outcome=\"\(attempt.outcome.rawValue)\">attempt \(number): "
                + "<span class=\"cell \(attempt.outcome.rawValue)\">\(attempt.outcome.rawValue)</span> \(formatSeconds(attempt.duration))"
                + (attempt.worker.map { " on <code>\(escape($0))</code>" } ?? "")
                + (attempt.message.isEmpty ? "" : " – \(escape(attempt.message))")
                + (steps.isEmpty ? "" : " <span style=\"color:#616161\">(\(steps))</span>")
                + (attempt.screenshot.map { " screenshot: <code>\(escape($0))</code>" } ?? "")
                + "</li>\n")
        }
        page.raw("</ol>\n")
    }
}
