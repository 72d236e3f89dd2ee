import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import LabCore
import QMP
import Testing

/// An XML document as a tree, read by Foundation's XMLParser (libxml2): what a
/// JUnit reader sees, not what a string search finds.
final class XMLTree: NSObject, XMLParserDelegate {
    final class Element {
        let name: String
        let attributes: [String: String]
        var children: [Element] = []
        var text = ""
        init(name: String, attributes: [String: String]) {
            self.name = name
            self.attributes = attributes
        }
        func all(_ name: String) -> [Element] { children.filter { $0.name == name } }
        func first(_ name: String) -> Element? { children.first { $0.name == name } }
        /// Every element below this one named `name`, in document order.
        func descendants(_ name: String) -> [Element] { children.flatMap { ($0.name == name ? [$0] : []) + $0.descendants(name) } }
    }

    private var stack: [Element] = []
    private(set) var root: Element?
    private(set) var error: Error?

    static func parse(_ text: String) throws -> Element {
        let tree = XMLTree()
        let parser = XMLParser(data: Data(text.utf8))
        parser.delegate = tree
        let ok = parser.parse()
        guard ok, let root = tree.root else { throw parser.parserError ?? tree.error ?? CocoaError(.fileReadCorruptFile) }
        return root
    }

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
        let element = Element(name: name, attributes: attributes)
        stack.last?.children.append(element)
        if stack.isEmpty { root = element }
        stack.append(element)
    }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) { stack.removeLast() }
    func parser(_ parser: XMLParser, foundCharacters string: String) { stack.last?.text += string }
    func parser(_ parser: XMLParser, parseErrorOccurred parseError: Error) { error = parseError }
}

/// `--retry-errors`: what the reports say of an entry run more than once, and the
/// exit status a run's outcomes give (no QEMU).
@Suite("Retried entries in the reports and the run's verdict")
struct RetryReportTests {
    static func entry(_ guest: String, _ test: String, _ index: Int) -> TestRunEntry {
        TestRunEntry(guest: guest, test: test, repeatIndex: 1, matrixIndex: index)
    }

    static func result(_ entry: TestRunEntry, _ outcome: TestOutcome, _ message: String = "", seconds: Double = 1,
                       steps: [(String, Double)] = [("revert fast", 0.25)], attempts: [TestResult] = []) -> TestResult {
        var result = TestResult(entry: entry, outcome: outcome, duration: seconds, exitStatus: outcome == .passed ? 0 : nil,
                                output: outcome == .passed ? "ok\n" : "", message: message, steps: steps.map { (name: $0.0, seconds: $0.1) })
        result.attempts = attempts
        return result
    }

    /// a/flaky: an error, then passed. a/broken: an error, then failed. b/infra: error,
    /// timeout, error (timeouts retried too). b/plain: passed once.
    static func report() -> TestReport {
        let flaky = entry("a", "flaky", 0), broken = entry("a", "broken", 1), infra = entry("b", "infra", 2), plain = entry("b", "plain", 3)
        var hookError = result(flaky, .error, "before_each hook failed (exit 3): no card <&>", seconds: 0.5, steps: [("before_each", 0.5)])
        hookError.worker = "m-j2"
        let results = [
            result(flaky, .passed, seconds: 2, attempts: [hookError]),
            result(broken, .failed, "exit status 1 (expected 0)", attempts: [result(broken, .error, "QEMU exited with status 1 during the test")]),
            result(infra, .error, "guest b did not boot: QEMU did not start", seconds: 3, steps: [("boot", 3)], attempts: [
                result(infra, .error, "guest b did not boot: QEMU did not start", seconds: 3, steps: [("boot", 3)]),
                result(infra, .timeout, "the test did not end within 2 s", seconds: 2),
            ]),
            result(plain, .passed),
        ]
        return TestReport(lab: "m", startedAt: 10, duration: 20, shards: [], results: results)
    }

    @Test func jsonKeepsEveryAttemptAndReadsThemBack() throws {
        let report = Self.report()
        let json = report.json
        let results = try #require(json["results"]?.arrayValue)
        #expect(results.map { $0["retried"]?.boolValue } == [true, true, true, false])
        #expect(results[3]["attempts"] == nil, "an entry that ran once has no attempts list")
        let infra = try #require(results[2]["attempts"]?.arrayValue)
        // Every attempt, the last (the result itself) too, numbered from 1.
        #expect(infra.map { $0["attempt"]?.intValue } == [1, 2, 3])
        #expect(infra.map { $0["outcome"]?.stringValue } == ["error", "timeout", "error"])
        #expect(infra.map { $0["duration_seconds"]?.doubleValue } == [3, 2, 3])
        #expect(infra[0]["steps"]?[0]?["name"]?.stringValue == "boot")
        #expect(results[0]["attempts"]?[0]?["worker"]?.stringValue == "m-j2")
        #expect(results[0]["outcome"]?.stringValue == "passed", "the outcome is the last attempt's")

        // Back from the file: the same attempts, the last one being the result.
        let back = results.compactMap(TestResult.init)
        #expect(back.map(\.attempts.count) == [1, 1, 2, 0])
        #expect(back[2].attempts.map(\.outcome) == [.error, .timeout])
        #expect(back[2].attempts[1].message == "the test did not end within 2 s")
        #expect(back[0].attempts[0].worker == "m-j2")
        #expect(back[0].attempts[0].entry.test == "flaky")
        #expect(back[0].attempts[0].steps.map(\.name) == ["before_each"])
        // The summary counts entries by their last attempt.
        #expect(report.summaryLine == "2 passed, 1 failed, 1 error")
    }

    @Test func junitWritesAttemptsAsSurefireReruns() throws {
        let root = try XMLTree.parse(JUnitReport.xml(Self.report()))
        #expect(root.name == "testsuites")
        #expect(root.attributes["tests"] == "4" && root.attributes["failures"] == "1" && root.attributes["errors"] == "1")
        let cases = root.descendants("testcase")
        #expect(cases.map { $0.attributes["name"] } == ["flaky", "broken", "infra", "plain"])
        let elements = cases.map { $0.children.map(\.name).filter { $0 != "properties" && $0 != "system-out" } }
        // Passed after an error: a flaky error; still wrong after an error: the failure and a rerun error.
        #expect(elements == [["flakyError"], ["failure", "rerunError"], ["error", "rerunError", "rerunError"], []])
        let attemptsProperty = cases.map { $0.first("properties")?.all("property").first { $0.attributes["name"] == "attempts" }?.attributes["value"] }
        #expect(attemptsProperty == ["2", "2", "3", nil])

        // Surefire's rerun elements: message and type, the details in stackTrace.
        let flaky = try #require(cases[0].first("flakyError"))
        #expect(flaky.attributes["message"] == "before_each hook failed (exit 3): no card <&>")
        #expect(flaky.attributes["type"] == "error")
        let trace = try #require(flaky.first("stackTrace")).text
        #expect(trace.hasPrefix("attempt 1 of 2: error after 0.500 s on m-j2\nbefore_each hook failed"), "\(trace)")
        let reruns = cases[2].all("rerunError")
        #expect(reruns.map { $0.attributes["type"] } == ["error", "timeout"])
        #expect(reruns.map { $0.first("stackTrace")?.text.components(separatedBy: ":").first } == ["attempt 1 of 3", "attempt 2 of 3"])
        #expect(cases[0].first("system-out")?.text == "ok\n", "the case's output is its last attempt's")

        // A case's time is all its attempts', so the suite's time adds up.
        #expect(cases.map { $0.attributes["time"] } == ["2.500", "2.000", "8.000", "1.000"])
        let suites = root.descendants("testsuite")
        #expect(suites.map { $0.attributes["time"] } == ["4.500", "9.000"])
    }

    @Test func htmlListsTheAttemptsUnderTheEntry() {
        let html = HTMLReport.html([Self.report()])
        #expect(html.components(separatedBy: "<ol class=\"attempts\"").count == 4, "one list per retried entry")
        #expect(html.contains(#"<ol class="attempts" data-attempts="3""#))
        #expect(html.contains(#"<li data-attempt="2" data-outcome="timeout">attempt 2: <span class="cell timeout">timeout</span>"#), "\(html)")
        #expect(html.contains("no card &lt;&amp;&gt;"), "messages are escaped")
        #expect(html.contains("on <code>m-j2</code>"))
    }

    /// 0 all passed; 1 a test failed or timed out (whatever else); 5 errors only.
    @Test func verdictTellsTestFailuresFromInfrastructure() {
        func verdict(_ outcomes: [TestOutcome]) -> Int32 {
            TestReport(lab: "m", startedAt: 0, duration: 0, shards: [],
                       results: outcomes.enumerated().map { Self.result(Self.entry("a", "t\($0)", $0), $1) }).verdict.rawValue
        }
        #expect(verdict([.passed, .passed]) == 0)
        #expect(verdict([.passed, .failed]) == 1)
        #expect(verdict([.failed, .error]) == 1, "a test's failure wins")
        #expect(verdict([.timeout, .error]) == 1, "a timeout is the test's")
        #expect(verdict([.passed, .error]) == 5)
        #expect(verdict([.error, .skipped]) == 5, "a guest that did not boot, and what it kept from running")
        #expect(verdict([]) == 1, "nothing ran")
        #expect(Self.report().verdict.rawValue == 1)
    }
}
