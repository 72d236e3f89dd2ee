import Platform
import QMP


/// `qlab report html` and `qlab run --html`: one self-contained HTML page
/// from one or more run reports (nights), newest last. Inline CSS and SVG,
/// no script, no network: a Content-Security-Policy forbids both, and every
/// text that came from a guest, QEMU or a report file is escaped (``escape(_:)``).
///
/// - The matrix guest x test of the newest report: each cell says how many
///   runs passed ("2/3"), is coloured by its worst outcome and marked flaky
///   when its repeats both passed and failed, or when its verdict changed more
///   than once over the reports (a single change is a regression or a fix,
///   which the history shows).
/// - History: a row per guest/test, a column per report, oldest to newest;
///   the first report where a test failed after passing is marked.
/// - Per run of the newest report: outcome, message, diagnoses with their
///   fix, step timings as a bar, output, QEMU's last output (QEMU ended), console tail, screenshot (embedded).
/// - The lab, host, QEMU version, accelerator and qlab version.
/// - Filters that need no script (``filterBar(_:into:)``): failed only, one
///   guest, one device, by CSS `:checked` (and `#failed` by `:target`).
/// - Links (the history's columns to their reports, a run's console and QEMU
///   logs and screenshot) relative to the page's directory when under it, so
///   a folder of reports moves (a CI artifact) with its links intact.
///
/// Cells carry `data-` attributes (guest, test, outcome, counts) so tools, and
/// the tests that load the page in Chromium, can read the page back.
public enum HTMLReport {
    /// The most bytes of one screenshot embedded; a larger one is linked instead.
    public static let maximumEmbeddedImageBytes = 8 << 20

    /// The page for `reports` (any order: sorted oldest to newest by start).
    /// `directory`: where the page is written; links to files under it are
    /// relative. `image(result)` gives a run's screenshot bytes (PNG) when it has one.
    public static func html(_ reports: [TestReport], directory: String? = nil, image: (TestResult) -> [UInt8]? = { _ in nil }) -> String {
        let reports = reports.enumerated().sorted { ($0.element.startedAt, $0.offset) < ($1.element.startedAt, $1.offset) }.map(\.element)
        guard let newest = reports.last else { return "" }
        let filters = Filters(newest)
        var page = HTMLPage()
        page.head(title: "qlab report: \(newest.lab)", extraStyle: filters.css)
        filters.inputs(into: &page)
        page.raw("<h1>qlab report: <span class=\"lab\">\(escape(newest.lab))</span></h1>\n")
        filters.bar(into: &page)
        environmentSection(newest, into: &page)
        matrixSection(reports, filters: filters, into: &page)
        historySection(reports, filters: filters, directory: directory, into: &page)
        runsSection(newest, filters: filters, directory: directory, image: image, into: &page)
        page.raw("</body>\n</html>\n")
        return page.text
    }

    /// The reports of one lab, or an error naming the two labs.
    public static func checkOneLab(_ reports: [TestReport]) throws {
        if let first = reports.first, let other = reports.first(where: { $0.lab != first.lab }) {
            throw TestReport.ReadError.differentLabs(first.lab, other.lab)
        }
    }

    // MARK: Verdicts

    /// The worst outcome first: what colours a cell with several runs.
    static let severity: [TestOutcome] = [.error, .timeout, .failed, .cancelled, .skipped, .passed]

    /// A guest/test pair's runs in one report.
    struct Cell {
        var results: [TestResult] = []
        var passed: Int { results.filter { $0.outcome == .passed }.count }
        var worst: TestOutcome { Self.worst(results.map(\.outcome)) }
        /// Both passed and failed (failed, timeout, error) among its repeats.
        var mixed: Bool { passed > 0 && results.contains { [.failed, .timeout, .error].contains($0.outcome) } }
        /// Passed or not, for the history; nil when it did not run (skipped, cancelled only).
        var verdict: Bool? {
            let ran = results.filter { ![.skipped, .cancelled].contains($0.outcome) }
            return ran.isEmpty ? nil : ran.allSatisfy { $0.outcome == .passed }
        }
        static func worst(_ outcomes: [TestOutcome]) -> TestOutcome {
            HTMLReport.severity.first { outcomes.contains($0) } ?? .skipped
        }
    }

    struct Key: Hashable {
        var guest: String
        /// The device of the lab's device dimension (nil without one): a row of its own per guest.
        var device: String? = nil
        var test: String

        init(guest: String, device: String? = nil, test: String) {
            self.guest = guest
            self.device = device
            self.test = test
        }

        init(_ entry: TestRunEntry) { self.init(guest: entry.guest, device: entry.device, test: entry.test) }

        /// The matrix row: the guest, or the guest with its device.
        var row: Row { Row(guest: guest, device: device) }
    }

    /// A matrix row: a guest, per device in a lab with a device dimension.
    struct Row: Hashable {
        var guest: String
        var device: String?

        /// `grub`, or `grub · scsi-lsi`.
        var label: String { device.map { guest + " · " + $0 } ?? guest }
        /// `data-device="..."` when the row has a device.
        var deviceAttribute: String { device.map { " data-device=\"\(escape($0))\"" } ?? "" }
    }

    /// Cells by guest/test, and the keys in matrix order.
    static func cells(_ report: TestReport) -> (keys: [Key], cells: [Key: Cell]) {
        var keys: [Key] = []
        var cells: [Key: Cell] = [:]
        for result in report.results {
            let key = Key(result.entry)
            if cells[key] == nil { keys.append(key) }
            cells[key, default: Cell()].results.append(result)
        }
        return (keys, cells)
    }

    /// Flaky: mixed repeats in the newest report, or a verdict that changed more than once over the reports.
    static func isFlaky(_ key: Key, in reports: [[Key: Cell]]) -> Bool {
        if reports.last?[key]?.mixed == true { return true }
        let verdicts = reports.compactMap { $0[key]?.verdict }
        let changes = zip(verdicts, verdicts.dropFirst()).filter { $0 != $1 }.count
        return changes >= 2
    }

    // MARK: Sections

    static func environmentSection(_ report: TestReport, into page: inout HTMLPage) {
        page.raw("<section id=\"environment\"><h2>Run</h2>\n<table class=\"facts\">\n")
        let facts: [(String, String, String)] = [
            ("lab", "Lab", report.lab),
            ("host", "Host", report.hostname),
            ("started", "Started", JSONTime.iso8601(report.startedAt)),
            ("duration", "Duration", formatSeconds(report.duration)),
            ("qemu_version", "QEMU", report.qemuVersion ?? "unknown (no guest booted)"),
            ("accelerator", "Accelerator", report.accelerator ?? "unknown (no guest booted)"),
            ("qlab_version", "qlab", report.qlabVersion.isEmpty ? "unknown" : report.qlabVersion),
            ("shards", "Shards", report.shards.isEmpty ? "whole run" : report.shards.joined(separator: ", ")),
            ("summary", "Summary", report.summaryLine),
        ] + report.runHooks.filter { !$0.succeeded }.map { ("hook_\($0.hook)", $0.hook, "\($0.outcome.rawValue): \($0.message)") }
        for (id, label, value) in facts {
            page.raw("<tr><th>\(label)</th><td data-fact=\"\(id)\">\(escape(value))</td></tr>\n")
        }
        // Labels (`--label firmware=21.12.1`): a row here and a line in each history column
        // header, once the report carries them (``labelLines(_:)``).
        let labels = labelLines(report)
        if !labels.isEmpty {
            page.raw("<tr><th>Labels</th><td data-fact=\"labels\">" + labels.map { "<code class=\"label\">\(escape($0))</code>" }.joined(separator: " ") + "</td></tr>\n")
        }
        page.raw("</table></section>\n")
    }

    static func matrixSection(_ reports: [TestReport], filters: Filters, into page: inout HTMLPage) {
        let newest = reports.last!
        let (keys, cells) = Self.cells(newest)
        let all = reports.map { Self.cells($0).cells }
        var rows: [Row] = []
        var tests: [String] = []
        for key in keys {
            if !rows.contains(key.row) { rows.append(key.row) }
            if !tests.contains(key.test) { tests.append(key.test) }
        }
        // The run of each cell a link goes to: its first that did not pass, else its first.
        var anchors: [Key: Int] = [:]
        for (index, result) in newest.results.enumerated() {
            let key = Key(result.entry)
            if anchors[key] == nil || (result.outcome != .passed && newest.results[anchors[key]!].outcome == .passed) { anchors[key] = index }
        }
        page.raw("<section id=\"matrix\"><h2>Matrix</h2>\n<table class=\"matrix\">\n<tr><th>"
            + (rows.contains { $0.device != nil } ? "guest · device" : "guest") + " \\ test</th>")
        for test in tests { page.raw("<th scope=\"col\">\(escape(test))</th>") }
        page.raw("</tr>\n")
        for row in rows {
            let guest = row.guest
            let rowPassed = tests.allSatisfy { cells[Key(guest: guest, device: row.device, test: $0)].map { $0.worst == .passed } ?? true }
            page.raw("<tr data-guest=\"\(escape(guest))\"\(row.deviceAttribute)\(filters.attributes(row, passed: rowPassed))><th scope=\"row\">\(escape(row.label))</th>")
            for test in tests {
                let key = Key(guest: guest, device: row.device, test: test)
                guard let cell = cells[key] else {
                    page.raw("<td class=\"none\" data-guest=\"\(escape(guest))\"\(row.deviceAttribute) data-test=\"\(escape(test))\" data-outcome=\"none\">–</td>")
                    continue
                }
                let flaky = isFlaky(key, in: all)
                let outcome = cell.worst.rawValue
                let counts = TestOutcome.allCases.compactMap { o -> String? in
                    let n = cell.results.filter { $0.outcome == o }.count
                    return n > 0 ? "\(n) \(o.rawValue)" : nil
                }.joined(separator: ", ")
                page.raw("<td class=\"cell \(outcome)\(flaky ? " flaky" : "")\" data-guest=\"\(escape(guest))\"\(row.deviceAttribute) data-test=\"\(escape(test))\" "
                    + "data-outcome=\"\(outcome)\" data-passed=\"\(cell.passed)\" data-runs=\"\(cell.results.count)\" data-flaky=\"\(flaky)\" "
                    + "title=\"\(escape(counts))\"><a href=\"#run-\(anchors[key] ?? 0)\">\(cell.passed)/\(cell.results.count)</a>"
                    + (flaky ? " <span class=\"flag\">flaky</span>" : "") + "</td>")
            }
            page.raw("</tr>\n")
        }
        page.raw("</table>\n<p class=\"legend\">")
        for outcome in severity.reversed() { page.raw("<span class=\"cell \(outcome.rawValue)\">\(outcome.rawValue)</span> ") }
        page.raw("· cells: runs passed / runs; <span class=\"flag\">flaky</span>: repeats both passed and failed, "
            + "or the result changed more than once over the reports</p></section>\n")
    }

    static func historySection(_ reports: [TestReport], filters: Filters, directory: String?, into page: inout HTMLPage) {
        let perReport = reports.map { Self.cells($0) }
        // Rows: the newest report's matrix order, then what only older reports had.
        var keys: [Key] = []
        for (reportKeys, _) in perReport.reversed() {
            for key in reportKeys where !keys.contains(key) { keys.append(key) }
        }
        page.raw("<section id=\"history\"><h2>History</h2>\n<table class=\"history\">\n<tr><th>guest</th><th>test</th>")
        for (index, report) in reports.enumerated() {
            // Each column links to its own report: its page beside its JSON file when there is one,
            // else the JSON file; the newest report of a run's own page is this page.
            let when = escape(String(JSONTime.iso8601(report.startedAt).prefix(16)).replacingT())
            let link = reportLink(report, directory: directory) ?? (index == reports.count - 1 ? "#environment" : nil)
            let labels = labelLines(report).map { "<br><code class=\"label\">\(escape($0))</code>" }.joined()
            page.raw("<th scope=\"col\" data-report=\"\(index)\" title=\"\(escape(report.hostname))\">"
                + (link.map { "<a href=\"\(escape($0))\">\(when)</a>" } ?? when) + labels + "</th>")
        }
        page.raw("</tr>\n")
        for key in keys {
            let passed = perReport.allSatisfy { $0.cells[key].map { $0.worst == .passed } ?? true }
            page.raw("<tr data-guest=\"\(escape(key.guest))\"\(key.row.deviceAttribute) data-test=\"\(escape(key.test))\"\(filters.attributes(key.row, passed: passed))><th>\(escape(key.row.label))</th><th>\(escape(key.test))</th>")
            var lastVerdict: Bool?
            for (index, (_, cells)) in perReport.enumerated() {
                guard let cell = cells[key] else {
                    page.raw("<td class=\"none\" data-report=\"\(index)\" data-outcome=\"none\">–</td>")
                    continue
                }
                let verdict = cell.verdict
                let firstFailure = lastVerdict == true && verdict == false
                if let verdict { lastVerdict = verdict }
                page.raw("<td class=\"cell \(cell.worst.rawValue)\(firstFailure ? " first-failure" : "")\" data-report=\"\(index)\" "
                    + "data-outcome=\"\(cell.worst.rawValue)\" data-passed=\"\(cell.passed)\" data-runs=\"\(cell.results.count)\">"
                    + "\(cell.passed)/\(cell.results.count)" + (firstFailure ? " <span class=\"flag\">first failure</span>" : "") + "</td>")
            }
            page.raw("</tr>\n")
        }
        page.raw("</table></section>\n")
    }

    /// Step colours: the same step has the same colour in every bar.
    static let stepColours: [String: String] = [
        "boot": "#6d4c41", "revert": "#1e88e5", "reset": "#1e88e5", "attach": "#8e24aa", "rescan": "#00897b",
        "test": "#43a047", "before_each": "#757575", "after_each": "#9e9e9e",
    ]

    static func runsSection(_ report: TestReport, filters: Filters, directory: String?, image: (TestResult) -> [UInt8]?, into page: inout HTMLPage) {
        // One scale for every bar, so bars compare.
        let longest = max(report.results.map { $0.steps.reduce(0) { $0 + max(0, finite($1.seconds)) } }.max() ?? 0, 0.001)
        // Repeats of each guest/test: "repeat 2 of 3".
        var repeats: [Key: Int] = [:]
        for result in report.results where !result.isBoot { repeats[Key(result.entry), default: 0] = max(repeats[Key(result.entry)] ?? 0, result.entry.repeatIndex) }
        page.raw("<section id=\"runs\"><h2>Runs</h2>\n")
        for (index, result) in report.results.enumerated() {
            let name = result.isBoot ? "boot" : result.entry.test
            let row = Key(result.entry).row
            let repeatCount = repeats[Key(result.entry)] ?? 1
            page.raw("<details id=\"run-\(index)\" class=\"run \(result.outcome.rawValue)\" data-guest=\"\(escape(result.entry.guest))\"\(row.deviceAttribute) "
                + "data-test=\"\(escape(result.entry.test))\" data-repeat=\"\(result.entry.repeatIndex)\" data-outcome=\"\(result.outcome.rawValue)\""
                + (result.worker.map { " data-worker=\"\(escape($0))\"" } ?? "")
                + filters.attributes(row, passed: result.outcome == .passed)
                + (result.outcome == .passed ? "" : " open") + ">\n")
            page.raw("<summary><span class=\"cell \(result.outcome.rawValue)\">\(result.outcome.rawValue)</span> \(escape(row.label)) "
                + "<b>\(escape(name))</b>"
                + (!result.isBoot && repeatCount > 1 ? " <span class=\"repeat\">repeat \(result.entry.repeatIndex) of \(repeatCount)</span>" : "")
                + " \(formatSeconds(result.duration))"
                // A `--jobs` run: which clone ran it.
                + (result.worker.map { " on <code>\(escape($0))</code>" } ?? "")
                + (result.message.isEmpty ? "" : " – <span class=\"message\">\(escape(result.message))</span>") + "</summary>\n")
            attemptsList(result, into: &page)
            testFacts(result, into: &page)
            if let status = result.exitStatus { page.raw("<p>exit status \(status)</p>\n") }
            if !result.diagnoses.isEmpty {
                page.raw("<ul class=\"diagnoses\">\n")
                for diagnosis in result.diagnoses {
                    page.raw("<li><code>\(escape(diagnosis.id))</code> \(escape(diagnosis.summary))<br>fix: \(escape(diagnosis.fix))</li>\n")
                }
                page.raw("</ul>\n")
            }
            if !result.steps.isEmpty { stepBar(result.steps, scale: 600 / longest, into: &page) }
            if !result.output.isEmpty { page.raw("<h4>output</h4>\n<pre class=\"output\">\(escape(result.output))</pre>\n") }
            if !result.qemuOutput.isEmpty { page.raw("<h4>QEMU's last output</h4>\n<pre class=\"qemu\">\(escape(result.qemuOutput))</pre>\n") }
            if !result.consoleTail.isEmpty { page.raw("<h4>console tail</h4>\n<pre class=\"console\">\(escape(result.consoleTail))</pre>\n") }
            if let path = result.screenshot {
                if let bytes = image(result), bytes.count <= maximumEmbeddedImageBytes, bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) {
                    page.raw("<h4>screenshot</h4>\n<img class=\"screenshot\" alt=\"screenshot of \(escape(result.entry.guest)) at the end of the run\" "
                        + "src=\"data:image/png;base64,\(Base64.encode(bytes))\">\n")
                }
                page.raw("<p class=\"screenshot-path\">screenshot: <a href=\"\(escape(href(path, from: directory)))\"><code>\(escape(path))</code></a></p>\n")
            }
            logLinks(result, directory: directory, into: &page)
            page.raw("</details>\n")
        }
        page.raw("</section>\n")
    }

    /// What the run was: when it began, the test's command and what it expected.
    static func testFacts(_ result: TestResult, into page: inout HTMLPage) {
        var rows: [(String, String, String)] = []
        if let started = result.startedAt { rows.append(("started", "started", escape(JSONTime.iso8601(started)))) }
        if let command = result.command { rows.append(("command", "command", "<pre class=\"command\">\(escape(command))</pre>")) }
        var expected: [String] = []
        if let status = result.expectedStatus, result.command != nil { expected.append("exit status \(status)") }
        expected += result.expect.map { "output contains <code>\(escape($0))</code>" }
        expected += result.screenExpect.map { "screen shows <code>\(escape($0))</code>" }
        if !expected.isEmpty { rows.append(("expected", "expected", expected.joined(separator: "; "))) }
        guard !rows.isEmpty else { return }
        page.raw("<table class=\"test\">\n")
        for (id, label, html) in rows { page.raw("<tr><th>\(label)</th><td data-fact=\"\(id)\">\(html)</td></tr>\n") }
        page.raw("</table>\n")
    }

    /// Links to the run's logs copied next to the report (``RunLogs``).
    static func logLinks(_ result: TestResult, directory: String?, into page: inout HTMLPage) {
        let links = [("console", "full console log", result.consoleLog), ("qemu", "QEMU's log", result.qemuLog)].compactMap { kind, text, path in
            path.map { "<a class=\"log\" data-log=\"\(kind)\" href=\"\(escape(href($0, from: directory)))\">\(text)</a>" }
        }
        if !links.isEmpty { page.raw("<p class=\"logs\">" + links.joined(separator: " · ") + "</p>\n") }
    }

    /// A report's own page: `NAME.html` beside its `NAME.json` when that exists, else the JSON file; nil for a run's own report.
    static func reportLink(_ report: TestReport, directory: String?) -> String? {
        guard let path = report.path else { return nil }
        let stem = path.hasSuffix(".json") ? String(path.dropLast(5)) : path
        let page = stem + ".html"
        return href(FileSystem.size(page) != nil ? page : path, from: directory)
    }

    /// `path` as a link from a page in `directory`: relative when under it, percent-encoded.
    static func href(_ path: String, from directory: String?) -> String {
        let relative = ReportPaths.relative(path, to: directory)
        var out = ""
        for byte in relative.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if byte < 0x80, c.isLetter || c.isNumber || "/-._~".contains(c) {
                out.append(c)
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }

    /// The report's labels as `key=value` lines for the header and the history's columns.
    /// (`qlab run --label`, the lab file's `labels:`); this is the one place that reads them.
    static func labelLines(_ report: TestReport) -> [String] { report.labels.map { "\($0.key)=\($0.value)" } }

    /// A horizontal bar of a run's steps (inline SVG), each step's name and seconds beside it.
    static func stepBar(_ steps: [(name: String, seconds: Double)], scale: Double, into page: inout HTMLPage) {
        var x = 0.0
        var rects = ""
        for step in steps {
            let width = max(0, finite(step.seconds)) * scale
            let colour = stepColours[step.name] ?? "#bdbdbd"
            rects += "<rect x=\"\(svgNumber(x))\" y=\"0\" width=\"\(svgNumber(max(width, 1)))\" height=\"14\" fill=\"\(colour)\">"
                + "<title>\(escape(step.name)) \(formatSeconds(step.seconds))</title></rect>"
            x += width
        }
        page.raw("<div class=\"steps\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(svgNumber(max(x, 1) + 1))\" height=\"14\" role=\"img\">\(rects)</svg> ")
        page.raw(steps.map { "<span class=\"step\"><i style=\"background:\(stepColours[$0.name] ?? "#bdbdbd")\"></i>\(escape($0.name)) \(formatSeconds($0.seconds))</span>" }
            .joined(separator: " "))
        page.raw("</div>\n")
    }

    // MARK: Text

    /// HTML text and attribute escaping; control characters (C0 but tab and
    /// newlines, DEL, C1 such as U+009B, the 8-bit CSI) and non-characters become
    /// U+FFFD. JUnit's XML escaping (``JUnitReport/escape(_:)``) plus DEL and C1,
    /// which XML 1.0 allows but HTML calls control characters: a page copied to a
    /// terminal must not carry them.
    public static func escape(_ text: String) -> String {
        JUnitReport.escape(String(String.UnicodeScalarView(text.unicodeScalars.map { (0x7F...0x9F).contains($0.value) ? "\u{FFFD}" : $0 })))
    }

    static func finite(_ value: Double) -> Double { value.isFinite && value < 1e9 ? value : 0 }

    /// "0.073 s", "12.3 s", "2 m 03 s".
    static func formatSeconds(_ value: Double) -> String {
        let seconds = finite(value)
        if seconds < 10 { return JUnitReport.seconds(seconds) + " s" }
        if seconds < 120 { return String(Int(seconds)) + "." + String(Int(seconds * 10) % 10) + " s" }
        let whole = Int(seconds)
        let rest = whole % 60
        return "\(whole / 60) m \(rest < 10 ? "0" : "")\(rest) s"
    }

    static func svgNumber(_ value: Double) -> String {
        let tenths = Int((finite(value) * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}

/// The page as it is built: one string, appended to.
struct HTMLPage {
    var text = ""

    mutating func raw(_ html: String) { text += html }

    mutating func head(title: String, extraStyle: String = "") {
        text.reserveCapacity(1 << 16)
        raw("""
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <meta name="generator" content="qlab \(LabCore.version)">
            <title>\(HTMLReport.escape(title))</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #212121; }
            h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.5em; border-bottom: 1px solid #ddd; } h4 { margin: .6em 0 .2em; }
            table { border-collapse: collapse; } th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
            table.matrix td, table.history td { text-align: center; min-width: 4em; }
            .cell.passed { background: #c8e6c9; } .cell.failed { background: #ffcdd2; } .cell.timeout { background: #ffe0b2; }
            .cell.error { background: #e1bee7; } .cell.skipped, .cell.cancelled, td.none { background: #eeeeee; color: #616161; }
            span.cell { padding: 0 .4em; border-radius: 3px; }
            .flaky { outline: 3px dashed #f57f17; outline-offset: -3px; } .flag { font-size: .8em; font-weight: bold; color: #e65100; }
            .first-failure { box-shadow: inset 0 0 0 3px #b71c1c; }
            td a { color: inherit; }
            details.run { border: 1px solid #ddd; margin: .4em 0; padding: .3em .6em; } summary { cursor: pointer; }
            pre { background: #263238; color: #eceff1; padding: .6em; overflow-x: auto; max-height: 30em; white-space: pre-wrap; word-break: break-all; }
            .steps { margin: .4em 0; } .steps svg { vertical-align: middle; background: #f5f5f5; }
            .step { font-size: .85em; margin-right: .6em; } .step i { display: inline-block; width: .8em; height: .8em; margin-right: .2em; }
            img.screenshot { max-width: 100%; border: 1px solid #999; image-rendering: pixelated; }
            .legend { font-size: .85em; color: #616161; }
            table.test { margin: .3em 0; } table.test pre { margin: 0; max-height: 10em; }
            .repeat { font-size: .85em; color: #616161; } code.label { background: #e3f2fd; padding: 0 .3em; }
            input.filter { position: absolute; opacity: 0; pointer-events: none; }
            nav.filters { margin: .5em 0; } nav.filters label, nav.filters a { border: 1px solid #9e9e9e; border-radius: 3px; padding: 0 .5em; margin-right: .2em; cursor: pointer; color: inherit; text-decoration: none; }
            \(extraStyle)</style>
            </head>
            <body>

            """)
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }

    /// "2026-11-30T17:45" -> "2026-11-30 17:45".
    fileprivate func replacingT() -> String {
        String(map { $0 == "T" ? " " : $0 })
    }
}

extension HTMLReport {
    /// The page for the JSON reports at `paths` (screenshots as the reports name them).
    /// `output`: where the page goes (links are relative to its directory); nil: stdout (relative to the working directory).
    public static func html(reportFiles paths: [String], output: String? = nil) throws -> String {
        guard !paths.isEmpty else { throw TestReport.ReadError.notAReport("(no reports given)") }
        let reports = try paths.map { try TestReport(path: $0) }
        try checkOneLab(reports)
        return html(reports, directory: ReportPaths.directory(of: output ?? "x")) { result in result.screenshot.flatMap(screenshotBytes) }
    }

    /// A screenshot's bytes; nil when missing, not a regular file, or too large to embed.
    public static func screenshotBytes(_ path: String) -> [UInt8]? {
        // O_NONBLOCK: a FIFO named in a report does not hang the page; only a regular file is read.
        guard let fd = try? FileDescriptor.open(path, .readOnly, options: [.nonBlocking, .closeOnExec]) else { return nil }
        defer { fd.closeIgnoringErrors() }
        guard case .success(let status) = FileStatus.of(descriptor: fd), status.kind == .regular else { return nil }
        return fd.readAll(limit: maximumEmbeddedImageBytes + 1)
    }
}
