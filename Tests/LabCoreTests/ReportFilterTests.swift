import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import LabCore
import Platform
import QMP
import Testing

/// The HTML report's filters (no script: CSS `:checked` and `:target`), its
/// links to logs copied beside it and to each night's own report, what a run
/// was (command, expectations, start), and JUnit's one name per test.
@Suite("Report filters, links and repeats", .serialized)
struct ReportFilterTests {
    /// A night of lab `night`: guests linux and freebsd, devices scsi-a and scsi-b, test `inquiry`
    /// repeated twice; linux/scsi-b fails its second repeat, freebsd/scsi-a times out.
    /// Each run names a console log and a QEMU log in `directory` (written here).
    static func night(_ n: Int, directory: String) throws -> TestReport {
        var results: [TestResult] = []
        for guest in ["linux", "freebsd"] {
            for device in ["scsi-a", "scsi-b"] {
                for repeatIndex in 1...2 {
                    let entry = TestRunEntry(guest: guest, device: device, test: "inquiry", repeatIndex: repeatIndex, matrixIndex: results.count)
                    let outcome: TestOutcome = switch (guest, device, repeatIndex) {
                    case ("linux", "scsi-b", 2): .failed
                    case ("freebsd", "scsi-a", _): .timeout
                    default: .passed
                    }
                    var result = TestResult(entry: entry, outcome: outcome, duration: 1, exitStatus: outcome == .timeout ? nil : (outcome == .passed ? 0 : 1),
                                            output: "RaSCSI\n", message: outcome == .passed ? "" : "output lacks \"21.12\"")
                    result.startedAt = 1_796_000_000 + Double(n) * 86_400 + Double(results.count) * 10
                    result.command = "sg_inq /dev/sg0 && echo '<done>'"
                    result.expectedStatus = 0
                    result.expect = ["21.12"]
                    let name = "night-\(guest)-\(device)-inquiry-\(repeatIndex)"
                    result.consoleLog = directory + "/" + name + ".console.log"
                    result.qemuLog = directory + "/" + name + ".qemu.log"
                    try "console of \(name)\n".write(toFile: result.consoleLog!, atomically: true, encoding: .utf8)
                    try "qemu of \(name)\n".write(toFile: result.qemuLog!, atomically: true, encoding: .utf8)
                    results.append(result)
                }
            }
        }
        return TestReport(lab: "night", startedAt: 1_796_000_000 + Double(n) * 86_400, duration: 60, hostname: "bench", shards: [], results: results,
                          qemuVersion: "7.2.0", accelerator: "tcg")
    }

    /// `--repeat 2`: both cases are named `inquiry` (CI keeps one history), the repeat a property; read with an XML parser.
    @Test func junitNamesATestOnceWhateverTheRepeat() throws {
        let dir = try HTMLReportTests.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let report = try Self.night(0, directory: dir)
        let document = try XMLDocument(data: Data(JUnitReport.xml(report).utf8))
        let cases = try document.nodes(forXPath: "//testcase").compactMap { $0 as? XMLElement }
        #expect(cases.count == report.results.count)
        #expect(Set(cases.compactMap { $0.attribute(forName: "name")?.stringValue }) == ["inquiry"])
        let repeats = cases.map { element in
            (element.elements(forName: "properties").first?.elements(forName: "property") ?? [])
                .first { $0.attribute(forName: "name")?.stringValue == "repeat" }?.attribute(forName: "value")?.stringValue
        }
        #expect(repeats == report.results.map { String($0.entry.repeatIndex) })
        // The class name still tells guests and devices apart.
        #expect(cases.compactMap { $0.attribute(forName: "classname")?.stringValue }.prefix(4) == ["night.linux.scsi-a", "night.linux.scsi-a", "night.linux.scsi-b", "night.linux.scsi-b"])
        let failures = try document.nodes(forXPath: "//testcase[failure]").count
        #expect(failures == report.count(.failed))
    }

    /// What a run was, its logs and its start survive the JSON report (relative paths in the file, absolute read back).
    @Test func runFactsRoundTripThroughTheJSONReport() throws {
        let dir = try HTMLReportTests.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let report = try Self.night(0, directory: dir)
        try FileSystem.writeJSON(dir + "/night.json", report.json(relativeTo: dir))
        let text = try String(contentsOfFile: dir + "/night.json", encoding: .utf8)
        #expect(text.contains(#""console_log": "night-linux-scsi-a-inquiry-1.console.log""#), "relative in the file")
        let back = try TestReport(path: dir + "/night.json")
        #expect(back.results.map(\.consoleLog) == report.results.map(\.consoleLog))
        #expect(back.results.map(\.qemuLog) == report.results.map(\.qemuLog))
        #expect(back.results.map(\.startedAt) == report.results.map(\.startedAt))
        #expect(back.results.map(\.command) == report.results.map(\.command))
        #expect(back.results.map(\.expect) == report.results.map(\.expect))
        #expect(back.results.map(\.expectedStatus) == report.results.map(\.expectedStatus))
    }

    /// The page's structure: the filter inputs come first in the body (every section is their
    /// sibling, which `~` needs), no script, and what each run was.
    @Test func pageCarriesFiltersAndRunFactsWithoutScripts() throws {
        let dir = try HTMLReportTests.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let report = try Self.night(0, directory: dir)
        let html = HTMLReport.html([report], directory: dir)
        #expect(!html.lowercased().contains("<script"))
        #expect(html.contains("default-src 'none'"), "the CSP stays")
        let body = try #require(html.range(of: "<body>"))
        let firstSection = try #require(html.range(of: "<section"))
        for id in ["only-failed", "guest-1", "guest-2", "device-1", "device-2"] {
            let input = try #require(html.range(of: "class=\"filter\" name=\"\(id.split(separator: "-")[0])\" id=\"\(id)\"") ?? html.range(of: "class=\"filter\" id=\"\(id)\""), "input \(id)")
            #expect(input.lowerBound > body.upperBound && input.lowerBound < firstSection.lowerBound, "input \(id) before the sections")
        }
        #expect(html.contains(#"<pre class="command">sg_inq /dev/sg0 &amp;&amp; echo &apos;&lt;done&gt;&apos;</pre>"#))
        #expect(html.contains("output contains <code>21.12</code>"))
        #expect(html.contains(#"data-fact="started">2026-"#))
        #expect(html.contains(#"<span class="repeat">repeat 2 of 2</span>"#))
        #expect(html.contains(#"href="night-linux-scsi-b-inquiry-2.console.log""#), "relative link to the copied log")
        #expect(html.contains(#"href="night-linux-scsi-b-inquiry-2.qemu.log""#))
    }

    /// In real Chromium: the filters hide and show runs and rows with no script in the page
    /// (a test page beside it clicks the labels as a person would, and reads what is displayed),
    /// `report.html#failed` opens filtered, and every log link resolves to the copied file.
    @Test(Chromium.installed) func filtersWorkWithoutScriptsInChromium() throws {
        let dir = try HTMLReportTests.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Two nights; the older has its own page beside its JSON, which the history links.
        try FileManager.default.createDirectory(atPath: dir + "/nights", withIntermediateDirectories: true)
        let older = try Self.night(0, directory: dir + "/nights")
        try FileSystem.writeJSON(dir + "/nights/0.json", older.json(relativeTo: dir + "/nights"))
        try HTMLReport.html([older], directory: dir + "/nights").write(toFile: dir + "/nights/0.html", atomically: true, encoding: .utf8)
        let newest = try Self.night(1, directory: dir)
        try FileSystem.writeJSON(dir + "/1.json", newest.json(relativeTo: dir))
        let page = try HTMLReport.html(reportFiles: [dir + "/nights/0.json", dir + "/1.json"], output: dir + "/report.html")
        try page.write(toFile: dir + "/report.html", atomically: true, encoding: .utf8)
        #expect(page.contains(#"<a href="nights/0.html">"#), "the older night's column links its page")
        #expect(page.contains(#"<a href="1.json">"#), "the newest has no page of its own beside its JSON: its JSON")

        let harness = """
            <!DOCTYPE html><html><body><pre id="out"></pre>
            <iframe id="plain" src="report.html"></iframe><iframe id="failed" src="report.html#failed"></iframe>
            <script>
            var loaded = 0;
            function shown(doc) {
              return Array.from(doc.querySelectorAll('details.run, table.matrix tr[data-g], table.history tr[data-g]'))
                .filter(function (e) { return getComputedStyle(e).display !== 'none'; })
                .map(function (e) { return (e.id || e.closest('table').className) + ':' + e.dataset.guest + '/' + (e.dataset.device || '') + (e.dataset.repeat ? '#' + e.dataset.repeat : ''); });
            }
            function click(doc, id) { doc.querySelector('label[for="' + id + '"]').click(); }
            function run() {
              var doc = document.getElementById('plain').contentDocument;
              var out = {};
              out.all = shown(doc);
              click(doc, 'only-failed'); out.failed = shown(doc); click(doc, 'only-failed');
              click(doc, 'guest-2'); out.freebsd = shown(doc);
              click(doc, 'device-2'); out.freebsdScsiB = shown(doc);
              click(doc, 'guest-all'); click(doc, 'device-all'); out.reset = shown(doc);
              out.target = shown(document.getElementById('failed').contentDocument);
              out.links = Array.from(doc.querySelectorAll('a.log, table.history th a')).map(function (a) {
                var x = new XMLHttpRequest(); x.open('GET', a.href, false);
                try { x.send(); return a.href + '=' + x.responseText.length + ':' + x.responseText.split('\\n')[0]; } catch (e) { return a.href + '=error'; }
              });
              document.getElementById('out').textContent = JSON.stringify(out);
            }
            Array.from(document.querySelectorAll('iframe')).forEach(function (f) { f.onload = function () { if (++loaded == 2) run(); }; });
            </script></body></html>
            """
        try harness.write(toFile: dir + "/harness.html", atomically: true, encoding: .utf8)
        let dom = try Chromium.load(dir + "/harness.html", extraArguments: ["--allow-file-access-from-files"])
        let start = try #require(dom.range(of: "<pre id=\"out\">"), "\(dom.prefix(2000))")
        let end = try #require(dom.range(of: "</pre>", range: start.upperBound..<dom.endIndex))
        let json = try JSONValue.parse(Array(String(dom[start.upperBound..<end.lowerBound])
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&amp;", with: "&").utf8))
        func list(_ key: String) -> [String] { (json[key]?.arrayValue ?? []).compactMap(\.stringValue) }
        func runs(_ key: String) -> [String] { list(key).filter { $0.hasPrefix("run-") } }
        let all = newest.results.enumerated().map { "run-\($0.offset):\($0.element.entry.guest)/\($0.element.entry.device ?? "")#\($0.element.entry.repeatIndex)" }
        #expect(runs("all") == all)
        let failedRuns = all.enumerated().filter { newest.results[$0.offset].outcome != .passed }.map(\.element)
        #expect(runs("failed") == failedRuns, "failed only: the runs that did not pass")
        #expect(list("failed").filter { $0.hasPrefix("matrix") } == ["matrix:linux/scsi-b", "matrix:freebsd/scsi-a"], "and the matrix rows with a failure")
        #expect(runs("target") == failedRuns, "report.html#failed opens filtered")
        #expect(runs("freebsd") == all.filter { $0.contains(":freebsd/") })
        #expect(list("freebsd").filter { $0.hasPrefix("history") } == ["history:freebsd/scsi-a", "history:freebsd/scsi-b"])
        #expect(runs("freebsdScsiB") == all.filter { $0.contains(":freebsd/scsi-b#") })
        #expect(list("reset") == list("all"))
        // Every link resolves to the file it names: the copied logs, and the older night's page.
        let links = list("links")
        #expect(links.count == 2 * newest.results.count + 2, "\(links)")
        for result in newest.results {
            let name = (result.consoleLog! as NSString).lastPathComponent.replacingOccurrences(of: ".console.log", with: "")
            #expect(links.contains { $0.hasSuffix("/\(name).console.log=\(("console of " + name + "\n").utf8.count):console of \(name)") }, "\(name)")
            #expect(links.contains { $0.hasSuffix("/\(name).qemu.log=\(("qemu of " + name + "\n").utf8.count):qemu of \(name)") }, "\(name)")
        }
        #expect(links.contains { $0.hasPrefix("file://\(dir)/nights/0.html=") && $0.hasSuffix(":<!DOCTYPE html>") }, "\(links)")
    }
}
