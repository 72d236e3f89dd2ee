import Foundation
import LabCore
import Platform
import QMP
import Testing

/// Report files given to `qlab report merge` and `qlab report html`: one reader
/// (``TestReport/init(path:)``) decides what is wrong with a file, and both
/// commands exit 2 with the same words for it.
@Suite("Report files read by merge and html", .serialized)
struct ReportInputTests {
    @Test func badInputsExitTwoAlikeInMergeAndHTML() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let good = env.root + "/good.json"
        try FileSystem.writeJSON(good, HTMLReportTests.nights(HTMLReportTests.story)[0].json)
        let text = try String(contentsOfFile: good, encoding: .utf8)
        let directory = env.root + "/a-directory"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        func file(_ name: String, _ contents: String) throws -> String {
            let path = env.root + "/" + name
            try contents.write(toFile: path, atomically: false, encoding: .utf8)
            return path
        }
        let cases: [(path: String, words: String)] = [
            (env.root + "/missing.json", "missing.json: no such file"),
            (try file("truncated.json", String(text.prefix(text.count / 2))), "truncated.json: cannot read it as JSON (truncated: "),
            (try file("empty.json", ""), "empty.json: empty (0 bytes): not a run report"),
            (try file("array.json", "[1, 2, 3]\n"), "array.json: not a qlab run report"),
            (try file("string.json", "\"lab\"\n"), "string.json: not a qlab run report"),
            (directory, "a-directory: a directory, not a report file"),
        ]
        for (path, words) in cases {
            let merged = try env.qlab("report", "merge", good, path)
            #expect(merged.status == ExitStatus.usage.rawValue, "merge \(path): \(merged.output)")
            #expect(merged.stderr.contains(words), "merge \(path): \(merged.stderr)")
            #expect(merged.stdout.isEmpty)
            let page = try env.qlab("report", "html", good, path, "-o", env.root + "/page.html")
            #expect(page.status == ExitStatus.usage.rawValue, "html \(path): \(page.output)")
            #expect(page.stderr.contains(words), "html \(path): \(page.stderr)")
            #expect(!FileManager.default.fileExists(atPath: env.root + "/page.html"))
        }
    }

    /// A valid report over 20 MB (what 16 MiB refused): 1,000 runs with output and long console tails.
    @Test func aLargeValidReportIsRead() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let tail = (0..<250).map { "[\($0)] console line of a guest that talks a lot, padded to be long enough ........" }.joined(separator: "\n")
        var results: [TestResult] = []
        for index in 0..<1000 {
            let entry = TestRunEntry(guest: "g\(index % 10)", test: "t\(index / 10 % 20)", repeatIndex: index / 200 + 1, matrixIndex: index)
            results.append(TestResult(entry: entry, outcome: index % 7 == 0 ? .failed : .passed, duration: 1, exitStatus: 0,
                                      output: "output of run \(index)\n", consoleTail: tail))
        }
        let report = env.root + "/large.json"
        try FileSystem.writeJSON(report, TestReport(lab: "large", startedAt: 1_796_000_000, duration: 3600, shards: [], results: results).json)
        let size = try #require(FileSystem.size(report))
        #expect(size > 20_000_000, "\(size) bytes")
        #expect(size > 16 << 20)

        let merged = try env.qlab("report", "merge", report, "--json-report", env.root + "/merged.json")
        #expect(merged.status == 1, "\(merged.stderr.prefix(500))")  // some runs failed: merged, exit 1 as a run would
        #expect(merged.stderr.contains("merged 1 report: "), "\(merged.stderr.prefix(500))")
        #expect(try TestReport(path: env.root + "/merged.json").results.count == 1000)
        let page = try env.qlab("report", "html", report, "-o", env.root + "/large.html")
        #expect(page.status == 0, "\(page.stderr.prefix(500))")
    }

    /// Writing a report puts each double through a token (jansson has no shortest
    /// round-trip form): thousands of them, and big integers, come back exact.
    @Test func manyNumbersRoundTrip() throws {
        let values: [JSONValue] = (0..<5000).map { .double(Double($0) + 0.125) } + [.uint(UInt64.max), .int(-7), .double(1e-7)]
        let text = try JSONValue.array(values).serialized(pretty: true)
        #expect(try JSONValue.parse(text) == .array(values))
        #expect(String(decoding: text, as: UTF8.self).contains("4999.125"))
    }

    /// Over the cap: refused from its size, and the message says the cap.
    @Test func theCapIsInTheMessage() throws {
        let dir = try LabTempDirectory("cap")
        defer { dir.remove() }
        let path = try dir.write("r.json", "{\"lab\": \"x\", \"results\": []}")
        #expect(InputFile.read(path, limit: 10) == .failure(.tooLarge(limit: 10)))
        #expect(InputFile.read(path, limit: 100).map(\.count) == .success(27))
        let message = TestReport.ReadError.tooLarge(path, limit: TestReport.maximumFileBytes).description
        #expect(message == "\(path): larger than 256 MiB, the most qlab reads of a report: is it a run report?")
        #expect(TestReport.ReadError.tooLarge(path, limit: 1).exitStatus == .usage)
    }
}
