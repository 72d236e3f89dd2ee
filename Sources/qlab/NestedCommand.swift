import ArgumentParser
import Foundation
import LabCore
import Platform
import QMP

/// `qlab nested list|run`: the nested bench (docs/nested-bench.md).
struct NestedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nested",
        abstract: "The nested bench: real vfio passthrough inside a QEMU guest (L1), with no hardware.",
        discussion: """
            L1 (labs/nested-bench.yaml: q35, an emulated IOMMU, a PCI bridge with two legacy SCSI \
            cards, Debian's kernel, this machine's root over 9p) runs this qlab binary against its \
            real kernel; the scenarios pass its cards to a level-2 QEMU and check what qlab printed. \
            Build the image first: images/build.sh bench.
            """,
        subcommands: [List.self, Run.self])

    struct List: ParsableCommand, JSONReporting, UsesGlobalOptions {
        @OptionGroup(title: "Global options") var global: GlobalOptions
        static let configuration = CommandConfiguration(abstract: "Name the scenarios and what each proves.")
        @Flag(help: "Print the scenarios as JSON: [{\"id\", \"title\", \"boot\", \"proves\"}].") var json = false

        func run() throws {
            if json { return try printJSON(.array(NestedScenario.all.map(\.json))) }
            let width = NestedScenario.all.map(\.id.count).max() ?? 0
            for scenario in NestedScenario.all {
                let boot = scenario.boot == "control" ? "nointxmask=0" : "nointxmask=1"
                print(scenario.id.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + boot + "  " + scenario.title)
                if global.verbose { print(wrap(scenario.proves, indent: width + 2) + "\n") }
            }
        }
    }

    struct Run: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
        @OptionGroup(title: "Global options") var global: GlobalOptions
        static let configuration = CommandConfiguration(
            abstract: "Boot L1 and run the scenarios (by default all but the measurements, which run when named); exit 1 if any fails.",
            discussion: """
                One L1 boot per vfio-pci setting the chosen scenarios need (nointxmask=1, then 0 for \
                'control'); each boot's console log and report.json are kept in the run directory \
                (printed at the end). L1 is always taken down, and with it every QEMU inside it.
                """)

        @Argument(help: "Scenarios to run (see `qlab nested list`); all when none.") var scenarios: [String] = []
        @Option(help: ArgumentHelp("Also write the JSON report to FILE.", valueName: "FILE")) var jsonReport: String?
        @Flag(help: "Print the JSON report on stdout (the live report goes to stderr).") var json = false
        @Option(help: ArgumentHelp("The bench lab (default: labs/nested-bench.yaml here or beside this qlab's checkout).", valueName: "FILE"))
        var lab: String?
        @Flag(help: "Boot L1 afresh for every scenario instead of once per vfio-pci setting (slower).") var isolated = false

        func run() async throws {
            let selected: [NestedScenario]
            do { selected = try NestedBench.select(scenarios) } catch {
                throw Reported("nested run", error)
            }
            guard let labFile = lab ?? Self.defaultLabFile() else {
                throw ValidationError("labs/nested-bench.yaml not found here or beside this qlab; give --lab FILE")
            }
            // SIGINT/SIGTERM/SIGHUP: the current step stops, L1 (and every QEMU
            // inside it) is taken down, the report so far is written; exit 130/143/129.
            let (verbose, isolated, json, jsonReport) = (global.verbose, isolated, json, jsonReport)
            try await runCancellable("nested run") { stop in
                try await Self.runBench(selected, labFile: labFile, isolated: isolated, verbose: verbose, json: json, jsonReport: jsonReport, stop: stop)
            }
        }

        static func runBench(_ selected: [NestedScenario], labFile: String, isolated: Bool, verbose: Bool, json: Bool, jsonReport: String?, stop: StopRequest) async throws {
            let controller = labController()
            let bench = NestedBench(labFile: labFile, qlabExecutable: controller.supervisorExecutable, controller: controller)
            let report: NestedReport
            do {
                report = try await withStandardOutputOnStandardError(json) {
                    try bench.checkFiles()
                    let runDirectory = try bench.newRunDirectory()
                    let report = try await bench.run(selected, runDirectory: runDirectory, isolated: isolated) { event in
                        NestedCommand.show(event, verbose: verbose)
                    }
                    print("")
                    print(report.summary)
                    return report
                }
            } catch {
                if stop.isRequested { return }
                throw Reported("nested run", error)
            }
            if let jsonReport {
                do { try OutputFile.writeJSON(jsonReport, report.json) } catch {
                    throw Reported("nested run", error)
                }
            }
            if json { try printJSON(report.json) }
            if !report.passed { throw Reported(.failed) }
        }

        /// labs/nested-bench.yaml in the working directory, else in a parent of the executable's directory.
        static func defaultLabFile() -> String? {
            let relative = "labs/nested-bench.yaml"
            if FileManager.default.fileExists(atPath: relative) { return relative }
            var directory = URL(fileURLWithPath: labController().supervisorExecutable).deletingLastPathComponent()
            while directory.path != "/" {
                let candidate = directory.appendingPathComponent(relative).path
                if FileManager.default.fileExists(atPath: candidate) { return candidate }
                directory = directory.deletingLastPathComponent()
            }
            return nil
        }
    }

    /// The live report: boots, scenarios, steps with their checks.
    static func show(_ event: NestedBench.Event, verbose: Bool) {
        switch event {
        case .booting(let guest):
            print("booting L1 (\(guest): vfio-pci nointxmask=\(guest == "control" ? 0 : 1)) ...")
        case .booted(let guest, let after, let accel):
            print("L1 \(guest) ready after \(formatNestedSeconds(after)) (\(accel))")
        case .scenarioStarted(let scenario):
            print("[\(scenario.id)] \(scenario.title)")
        case .step(let step):
            let status = step.exitStatus.map { "exit \($0)" } ?? "no exit"
            print("  \(step.cleanup ? "(clean-up) " : "")$ \(step.command)   [\(status), \(formatNestedSeconds(step.duration))]")
            if verbose || !step.passed, !step.output.isEmpty { print(wrap(step.output, indent: 6)) }
            if let error = step.error { print("    ERROR \(error)") }
            for check in step.checks {
                print("    \(check.passed ? "ok  " : "FAIL") \(check.what)")
                if let seen = check.seen { print(wrap("seen: " + seen, indent: 10)) }
            }
        case .scenarioFinished(let result):
            print("[\(result.id)] \(result.outcome == .pass ? "PASS" : "FAIL") in \(formatNestedSeconds(result.duration))"
                + (result.failure.map { ": \($0)" } ?? ""))
        case .shutDown(let boot):
            print("L1 \(boot.guest) down after \(formatNestedSeconds(boot.duration))" + (boot.consoleLog.map { "; console log: \($0)" } ?? ""))
        }
    }

    static func wrap(_ text: String, indent: Int) -> String {
        let pad = String(repeating: " ", count: indent)
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { pad + $0 }.joined(separator: "\n")
    }
}
