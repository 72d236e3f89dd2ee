import Foundation
import LabCore
import Platform
import QMP
import Testing

/// docs/ci.md's recipes, run as written: the shell lines of each (GitLab
/// `script:` items, Jenkins `sh '...'` steps, GitHub Actions `run:` steps)
/// are taken out of the document and run with the CI's variables set, every
/// shard and then the final job, on a small lab with the real test guest.
@Suite("CI recipes in docs/ci.md (real QEMU)", .serialized)
struct CIRecipeTests {
    /// One CI job of a recipe: its shell lines in order.
    struct Job {
        var name: String
        var lines: [String] = []
    }

    static func document() throws -> String {
        try String(contentsOfFile: QLabTestEnvironment.repositoryRoot + "/docs/ci.md", encoding: .utf8)
    }

    /// The fenced block after `<!-- recipe: NAME -->`.
    static func recipe(_ name: String, in document: String) throws -> [String] {
        let marker = try #require(document.range(of: "<!-- recipe: \(name) -->"), "docs/ci.md has no recipe \(name)")
        let rest = document[marker.upperBound...]
        let open = try #require(rest.range(of: "```"))
        let body = rest[open.upperBound...].drop { $0 != "\n" }.dropFirst()
        let close = try #require(body.range(of: "\n```"))
        return body[..<close.lowerBound].components(separatedBy: "\n")
    }

    static func indentation(_ line: String) -> Int { line.prefix { $0 == " " }.count }

    /// GitLab: top-level keys are jobs; the items under `script:` are shell lines.
    static func gitlabJobs(_ lines: [String]) -> [Job] {
        var jobs: [Job] = []
        var scriptIndent: Int?
        for line in lines {
            let indent = indentation(line)
            let text = line.trimmingCharacters(in: .whitespaces)
            if indent == 0, text.hasSuffix(":"), !text.hasPrefix("#") {
                jobs.append(Job(name: String(text.dropLast())))
                scriptIndent = nil
            } else if text == "script:" {
                scriptIndent = indent
            } else if let scriptIndent, indent > scriptIndent, text.hasPrefix("- ") {
                jobs[jobs.count - 1].lines.append(String(text.dropFirst(2)))
            } else if let current = scriptIndent, indent <= current {
                scriptIndent = nil
            }
        }
        return jobs.filter { !$0.lines.isEmpty }
    }

    /// Jenkins: `stage('NAME')` names the job; `sh '...'` steps are shell lines.
    static func jenkinsJobs(_ lines: [String]) -> [Job] {
        var jobs: [Job] = []
        for line in lines {
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.hasPrefix("stage('"), let end = text.dropFirst(7).firstIndex(of: "'") {
                jobs.append(Job(name: String(text.dropFirst(7)[..<end])))
            } else if text.hasPrefix("sh '"), text.hasSuffix("'") {
                jobs[jobs.count - 1].lines.append(String(text.dropFirst(4).dropLast()))
            }
        }
        return jobs.filter { !$0.lines.isEmpty }
    }

    /// GitHub Actions: jobs are the keys under `jobs:`; `run:` steps are shell lines.
    static func githubJobs(_ lines: [String]) -> [Job] {
        var jobs: [Job] = []
        var inJobs = false
        for line in lines {
            let text = line.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("jobs:") {
                inJobs = true
            } else if inJobs, indentation(line) == 2, text.hasSuffix(":") {
                jobs.append(Job(name: String(text.dropLast())))
            } else if inJobs, text.hasPrefix("- run: ") {
                jobs[jobs.count - 1].lines.append(String(text.dropFirst(7)))
            } else if inJobs, text.hasPrefix("run: ") {
                jobs[jobs.count - 1].lines.append(String(text.dropFirst(5)))
            }
        }
        return jobs.filter { !$0.lines.isEmpty }
    }

    /// The lab the recipes name (labs/bench.yaml): the test guest, three tests, one that fails.
    static func workspace(_ env: QLabTestEnvironment, _ name: String) throws -> String {
        let dir = env.root + "/" + name
        try FileManager.default.createDirectory(atPath: dir + "/labs", withIntermediateDirectories: true)
        let lab = try env.writeGuestLab("bench", devices: "  {}", tests: """
              one: {run: "echo one", expect: one}
              two: {run: "echo two", expect: two}
              three: {run: "exit 1"}
            """)
        try FileManager.default.copyItem(atPath: lab, toPath: dir + "/labs/bench.yaml")
        return dir
    }

    /// Runs `line` as the CI would (sh -c, in the checkout), with `variables` set and qlab on PATH.
    static func sh(_ line: String, in directory: String, env: QLabTestEnvironment, variables: [String: String]) throws -> QLabTestEnvironment.Result {
        var environment = env.environment
        for key in ["QLAB_SHARD", "CI_NODE_INDEX", "CI_NODE_TOTAL", "SHARD"] { environment[key] = nil }
        environment.merge(variables) { $1 }
        let bin = URL(fileURLWithPath: QLabTestEnvironment.qlabExecutable).deletingLastPathComponent().path
        environment["PATH"] = bin + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", line]
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.environment = environment
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        return QLabTestEnvironment.Result(status: process.terminationStatus, stdout: text, stderr: "")
    }

    /// Runs every shard job (variables from `shardVariables(k)`), then the final job, and checks the result.
    static func runRecipe(_ name: String, jobs: [Job], finalJob: String, shardVariables: (Int) -> [String: String], expectedSource: (Int) -> String) throws {
        #expect(jobs.count == 2, "\(name): \(jobs.map(\.name))")
        let shardJob = try #require(jobs.first { $0.name != finalJob }, "\(name): no shard job")
        let final = try #require(jobs.first { $0.name == finalJob }, "\(name): no \(finalJob) job")
        #expect(shardJob.lines.contains { $0.contains("qlab run ") && $0.contains("--shard auto") }, "\(shardJob.lines)")
        #expect(final.lines.contains { $0.contains("qlab report merge ") } && final.lines.contains { $0.contains("qlab report html ") })

        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let dir = try workspace(env, name)
        for k in 1...3 {
            for line in shardJob.lines {
                let result = try sh(line, in: dir, env: env, variables: shardVariables(k))
                #expect(result.status == 0, "\(name) shard \(k): \(line)\n\(result.stdout)")
                if line.contains("qlab run ") {
                    #expect(result.stdout.contains("qlab run: shard \(k)/3 (from \(expectedSource(k)))"), "\(name) shard \(k): \(result.stdout)")
                }
            }
        }
        for line in final.lines {
            let result = try sh(line, in: dir, env: env, variables: ["CI": "true"])
            #expect(result.status == 0, "\(name) \(finalJob): \(line)\n\(result.stdout)")
        }
        let merged = try TestReport(path: dir + "/out/report.json")
        #expect(merged.shards.sorted() == ["1/3", "2/3", "3/3"])
        #expect(merged.results.map(\.entry.test) == ["one", "two", "three"])
        #expect(merged.results.map(\.outcome) == [.passed, .passed, .failed])
        #expect(FileManager.default.fileExists(atPath: dir + "/out/junit.xml"))
        let html = try String(contentsOfFile: dir + "/out/report.html", encoding: .utf8)
        #expect(html.contains(#"data-guest="linux" data-test="three" data-outcome="failed" data-passed="0" data-runs="1""#), "\(name)")
        for k in 1...3 { #expect(FileManager.default.fileExists(atPath: dir + "/out/report-\(k).html")) }
        #expect(env.qemuProcesses().isEmpty)
    }

    @Test func gitlabRecipe() throws {
        try RunLoopTests.requireImages()
        let jobs = Self.gitlabJobs(try Self.recipe("gitlab", in: try Self.document()))
        try Self.runRecipe("gitlab", jobs: jobs, finalJob: "report",
                           shardVariables: { ["CI": "true", "GITLAB_CI": "true", "CI_NODE_INDEX": "\($0)", "CI_NODE_TOTAL": "3"] },
                           expectedSource: { "CI_NODE_INDEX=\($0), CI_NODE_TOTAL=3 (GitLab parallel)" })
    }

    @Test func jenkinsRecipe() throws {
        try RunLoopTests.requireImages()
        let jobs = Self.jenkinsJobs(try Self.recipe("jenkins", in: try Self.document()))
        try Self.runRecipe("jenkins", jobs: jobs, finalJob: "report",
                           shardVariables: { ["JENKINS_URL": "http://jenkins.invalid/", "SHARD": "\($0)"] },
                           expectedSource: { "QLAB_SHARD=\($0)/3" })
    }

    @Test func githubActionsRecipe() throws {
        try RunLoopTests.requireImages()
        let jobs = Self.githubJobs(try Self.recipe("github", in: try Self.document()))
        try Self.runRecipe("github", jobs: jobs, finalJob: "report",
                           shardVariables: { ["CI": "true", "GITHUB_ACTIONS": "true", "SHARD": "\($0)", "QLAB_SHARD": "\($0)/3"] },
                           expectedSource: { "QLAB_SHARD=\($0)/3" })
    }

    /// Each recipe's shard line on a host whose hook always fails for test `one`
    /// (shard 1/3 holds only `one`): the entry is retried, stays an error, and the
    /// line fails the job with qlab's exit 5, not the test failures' pass.
    @Test func recipesFailTheJobOnInfrastructureErrors() throws {
        try RunLoopTests.requireImages()
        let document = try Self.document()
        let lines = [
            ("gitlab", Self.gitlabJobs(try Self.recipe("gitlab", in: document)), ["CI": "true", "CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "3"]),
            ("jenkins", Self.jenkinsJobs(try Self.recipe("jenkins", in: document)), ["SHARD": "1"]),
            ("github", Self.githubJobs(try Self.recipe("github", in: document)), ["SHARD": "1", "QLAB_SHARD": "1/3"]),
        ].map { name, jobs, variables in
            (name, jobs.flatMap(\.lines).first { $0.contains("qlab run ") }, variables)
        }
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let dir = env.root + "/infra"
        try FileManager.default.createDirectory(atPath: dir + "/labs", withIntermediateDirectories: true)
        let lab = try env.writeGuestLab("bench", devices: "  {}", tests: """
              one: {run: "echo one", expect: one}
              two: {run: "echo two", expect: two}
              three: {run: "exit 1"}
            """, extra: "hooks:\n  before_each: 'test \"$QLAB_TEST\" != one || { echo no card; exit 3; }'")
        try FileManager.default.copyItem(atPath: lab, toPath: dir + "/labs/bench.yaml")
        try FileManager.default.createDirectory(atPath: dir + "/out", withIntermediateDirectories: true)
        for (name, line, variables) in lines {
            let line = try #require(line, "\(name): no qlab run line")
            let result = try Self.sh(line, in: dir, env: env, variables: variables)
            #expect(result.status == 5, "\(name): \(line)\n\(result.stdout)")
            #expect(result.stdout.contains("qlab run: shard 1/3"), "\(name): \(result.stdout)")
            #expect(result.stdout.contains("linux one: ERROR") && result.stdout.contains("(attempt 3)"), "\(name): \(result.stdout)")
            let report = try TestReport(path: dir + "/out/report-1.json")
            #expect(report.results.map(\.outcome) == [.error] && report.results.first?.attempts.count == 2, "\(name)")
        }
        #expect(env.qemuProcesses().isEmpty)
    }

    @Test func shardAutoReadsTheCIVariables() throws {
        #expect(try ShardChoice.auto([:]) == ShardChoice(shard: nil, source: "no QLAB_SHARD or CI_NODE_INDEX/CI_NODE_TOTAL set"))
        #expect(try ShardChoice.auto(["CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "4"]).shard == Shard(index: 2, count: 4))
        // QLAB_SHARD wins.
        let both = try ShardChoice.auto(["QLAB_SHARD": "1/2", "CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "4"])
        #expect(both.shard == Shard(index: 1, count: 2))
        #expect(both.line == "shard 1/2 (from QLAB_SHARD=1/2)")
        #expect(throws: ShardChoice.Refusal.badValue(variables: "QLAB_SHARD", value: "'4/3'")) { try ShardChoice.auto(["QLAB_SHARD": "4/3"]) }
        #expect(throws: ShardChoice.Refusal.self) { try ShardChoice.auto(["CI_NODE_INDEX": "1"]) }
        #expect(throws: ShardChoice.Refusal.self) { try ShardChoice.auto(["CI_NODE_INDEX": "0", "CI_NODE_TOTAL": "3"]) }

        // The command: bad variables are a usage error, and nothing runs.
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try env.writeLab("tiny", "name: tiny\nguests:\n  g: {os: linux, kernel: /nonexistent}\ntests:\n  t: \"true\"\n")
        var environment = env.environment
        environment["CI_NODE_INDEX"] = "5"
        environment["CI_NODE_TOTAL"] = "4"
        let bad = try env.qlab(["run", lab, "--shard", "auto"], environment: environment)
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("--shard auto: CI_NODE_INDEX/CI_NODE_TOTAL is '5'/'4', not a shard K/N"), "\(bad.stderr)")
        // A shard with no cells (3 jobs, 1 cell) succeeds with an empty report.
        environment["CI_NODE_INDEX"] = nil
        environment["CI_NODE_TOTAL"] = nil
        environment["QLAB_SHARD"] = "3/3"
        let empty = try env.qlab(["run", lab, "--shard", "auto", "--json-report", env.root + "/empty.json"], environment: environment)
        #expect(empty.status == 0, "\(empty.output)")
        #expect(empty.stdout.contains("qlab run: shard 3/3 (from QLAB_SHARD=3/3)"))
        #expect(try TestReport(path: env.root + "/empty.json").shards == ["3/3"])
    }
}
