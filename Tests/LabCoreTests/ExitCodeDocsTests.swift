import Foundation
import LabCore
import QMP
import Testing

/// The README's table, every `--help` and every doc page say what the code's one
/// exit-code table (`ExitStatus`) says: every code they name is a row of it, and
/// the words next to the code name that row.
@Suite("Exit codes: docs, --help and the table agree")
struct ExitCodeDocsTests {
    /// Words that name each row; a clause giving a code must contain one of its row's.
    static let rowWords: [Int32: [String]] = [
        ExitStatus.success.rawValue: ["success", "done", "ready", "no check fails", "passed", "ok", "verdict", "printed"],
        ExitStatus.failed.rawValue: ["fail", "otherwise", "error", "refus", "unusable", "unreadable", "did not pass", "crash"],
        ExitStatus.usage.rawValue: ["bad", "usage", "typed wrong", "invalid", "argument", "lab file", "device", "tag", "not a", "refused", "unknown scenario"],
        ExitStatus.noSuchLab.rawValue: ["no such lab", "not running", "unknown", "does not know", "lab name"],
        ExitStatus.busy.rawValue: ["busy", "another command", "owns", "owner", "lock"],
        ExitStatus.infrastructure.rawValue: ["infrastructure", "error", "did not boot", "QEMU"],
        ExitStatus.timeout.rawValue: ["timeout", "within", "did not finish", "did not boot", "expired"],
        ExitStatus.hangup.rawValue: ["cancel", "SIG", "signal"],
        ExitStatus.interrupted.rawValue: ["cancel", "SIG", "signal", "Ctrl-C"],
        ExitStatus.terminated.rawValue: ["cancel", "SIG", "signal"],
    ]

    /// One code named by a text: the codes (`130/143/129` is three), the words after it
    /// up to the next code, the words before it back to the previous code, and the sentence.
    struct Claim: CustomStringConvertible {
        var codes: [Int]
        var clause: String
        var before: String
        var sentence: String
        var description: String { "\(codes.map(String.init).joined(separator: "/")) in \"\(sentence)\"" }
    }

    /// The exit codes a Markdown page or a help text names: in a sentence that speaks of
    /// exit statuses (`Exit status: 0 when ...; 2 for ...`, `exits 130 (143, 129)`, `(exit 124)`),
    /// each number that starts a clause (not a file mode such as 0644). Code blocks, inline code and table rows are left out
    /// (a guest's `exit 7` is not qlab's).
    static func claims(in text: String) -> [Claim] {
        var prose = text.replacingOccurrences(of: "```[\\s\\S]*?```", with: "", options: .regularExpression)
        // Inline code that runs `exit N` is a guest's; other inline code reads as words (`--timeout`).
        prose = prose.replacingOccurrences(of: "`[^`\\n]*exit[^`\\n]*`", with: "CODE", options: .regularExpression)
        prose = prose.replacingOccurrences(of: "`([^`\\n]*)`", with: "$1", options: .regularExpression)
        prose = prose.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("|") }.joined(separator: "\n")
        let sentences = prose.components(separatedBy: "\n\n").flatMap {
            $0.replacingOccurrences(of: "(?<=[.!?])\\s+", with: "\u{0}", options: .regularExpression)
                .split(separator: "\u{0}").map { $0.split(whereSeparator: \.isWhitespace).joined(separator: " ") }
        }
        let speaksOfExit = try! NSRegularExpression(pattern: "exit status:|exit status is|exit codes?\\b|\\bexits? \\**\\d", options: [.caseInsensitive])
        let code = try! NSRegularExpression(
            pattern: "(?:^|(?<=[:;,(] )|(?<=\\bor )|(?<=\\band )|(?<=\\bexit )|(?<=\\bexits )|(?<=status ))\\**((?:0|[1-9]\\d*)(?:/(?:0|[1-9]\\d*))*)\\**(?=[ ,;).]|$)(?! ?\\+)")
        let nextCode = try! NSRegularExpression(pattern: "[;,]\\s*\\**\\d+\\b")
        var claims: [Claim] = []
        var previousSentences: [String] = []
        for sentence in sentences {
            defer { previousSentences = Array((previousSentences + [sentence]).suffix(3)) }
            let range = NSRange(sentence.startIndex..., in: sentence)
            guard speaksOfExit.firstMatch(in: sentence, range: range) != nil else { continue }
            var previousEnd = sentence.startIndex
            // The first code of a sentence may answer the ones before (`... is refused, e.g. ... (exit 1).`).
            var lead = previousSentences.joined(separator: " ") + " "
            for match in code.matches(in: sentence, range: range) {
                guard let number = Range(match.range(at: 1), in: sentence), let end = Range(match.range, in: sentence)?.upperBound else { continue }
                let rest = String(sentence[end...])
                let restRange = NSRange(rest.startIndex..., in: rest)
                let clauseEnd = nextCode.firstMatch(in: rest, range: restRange).flatMap { Range($0.range, in: rest)?.lowerBound } ?? rest.endIndex
                let codes = sentence[number].split(separator: "/").compactMap { Int($0) }
                claims.append(Claim(codes: codes, clause: String(rest[..<clauseEnd]), before: lead + String(sentence[previousEnd..<number.lowerBound]), sentence: sentence))
                previousEnd = end
                lead = ""
            }
        }
        return claims
    }

    /// Problems with `claims` from `source`: a code the table lacks, or words that do not
    /// name its row: the clause after the code, else the words before it (`refused (exit 2)`).
    static func disagreements(_ claims: [Claim], source: String) -> [String] {
        var problems: [String] = []
        for claim in claims {
            for code in claim.codes {
                guard let status = ExitStatus.allCases.first(where: { Int($0.rawValue) == code }) else {
                    problems.append("\(source): exit code \(code) is not in the table (ExitStatus): \(claim)")
                    continue
                }
                // 0 can only mean success.
                if status == .success { continue }
                let words = rowWords[status.rawValue] ?? []
                let named = { (text: String) in words.contains { text.localizedCaseInsensitiveContains($0) } }
                if !named(claim.clause) && !named(claim.before) {
                    problems.append("\(source): \(code) should mean \"\(status.meaning)\": \(claim)")
                }
            }
        }
        return problems
    }

    @Test func readmeHasTheTable() throws {
        let readme = try String(contentsOfFile: LabFixtures.repositoryRoot + "/README.md", encoding: .utf8)
        #expect(readme.contains(ExitStatus.markdownTable), "README.md's exit-code table differs from ExitStatus.markdownTable:\n\(ExitStatus.markdownTable)")
    }

    @Test func docPagesAgreeWithTheTable() throws {
        let root = LabFixtures.repositoryRoot
        let pages = ["README.md"] + (try FileManager.default.contentsOfDirectory(atPath: root + "/docs")).filter { $0.hasSuffix(".md") }.sorted().map { "docs/" + $0 }
        var total = 0
        for page in pages {
            let claims = Self.claims(in: try String(contentsOfFile: root + "/" + page, encoding: .utf8))
            total += claims.count
            for problem in Self.disagreements(claims, source: page) { Issue.record(Comment(rawValue: problem)) }
        }
        // The scan finds the pages' exit statuses at all (doctor, guests, devices, exec, ci, json, ...).
        #expect(total >= 30, "only \(total) exit codes found in the docs: the scan is broken")
    }

    @Test func helpAgreesWithTheTable() throws {
        let help = try CommandLineCLITests.run(["--help"])
        #expect(help.status == 0)
        #expect(help.out.contains(ExitStatus.table), "qlab --help lacks the table:\n\(ExitStatus.table)")
        // Every command's help: abstract, discussion and each option's help.
        let dump = try CommandLineCLITests.run(["--experimental-dump-help"])
        #expect(dump.status == 0, "\(dump.err)")
        var texts: [(String, String)] = []
        func collect(_ command: JSONValue, path: String) {
            let name = path + " " + (command["commandName"]?.stringValue ?? "")
            let own = [command["abstract"]?.stringValue, command["discussion"]?.stringValue].compactMap { $0 }
            let arguments = (command["arguments"]?.arrayValue ?? []).compactMap { $0["abstract"]?.stringValue }
            texts.append((name, (own + arguments).joined(separator: "\n\n")))
            for sub in command["subcommands"]?.arrayValue ?? [] { collect(sub, path: name) }
        }
        collect(try JSONValue.parse(Array(dump.out.utf8))["command"] ?? .null, path: "")
        #expect(texts.count > 25, "\(texts.count) commands in the dump")
        var total = 0
        for (name, text) in texts {
            // The table itself (qlab --help) is checked whole above.
            let claims = Self.claims(in: text.replacingOccurrences(of: ExitStatus.table, with: ""))
            total += claims.count
            for problem in Self.disagreements(claims, source: "qlab\(name) --help") { Issue.record(Comment(rawValue: problem)) }
        }
        #expect(total >= 10, "only \(total) exit codes found in --help texts: the scan is broken")
    }

    /// The scan itself: it finds a wrong code and a code that means another row.
    @Test func theScanCatchesDisagreements() {
        let wrong = Self.claims(in: "Exit status: 0 when no check fails, 1 when one fails, 64 for bad arguments.")
        #expect(wrong.map(\.codes) == [[0], [1], [64]])
        #expect(Self.disagreements(wrong, source: "t").count == 1)
        let misnamed = Self.claims(in: "Exit status: 3 for a bad snapshot tag.")
        #expect(Self.disagreements(misnamed, source: "t").count == 1)
        let guest = Self.claims(in: "The step runs `exit 7` and expects 7.\n\n| 3 | row |")
        #expect(guest.isEmpty)
    }
}
