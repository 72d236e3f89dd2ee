import ArgumentParser
import Foundation
import LabCore
import QMP

/// `qlab guest ...`: commands about a lab's guest image.
struct GuestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guest", abstract: "Check a lab's guest image before runs depend on it.", subcommands: [Check.self])

    /// `qlab guest check LAB [GUEST]`: the guest booted as `qlab run` boots it, checked step by step.
    struct Check: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
        @OptionGroup(title: "Global options") var global: GlobalOptions
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Boot a lab's guest as `qlab run` does and check, step by step, everything a run relies on.",
            discussion: """
                Steps: QEMU and the firmware start; the serial console shows output (else the OS's \
                recipe from docs/guests.md); the ready text within boot_timeout; the login; the prompt; \
                the command framing (exit status, output, a long line, quotes, Ctrl-C); snapshot and \
                revert (or reset); for each lab device: hotplug or boot attachment, the rescan command, \
                its SCSI disks in the guest, unplug. One PASS/FAIL/SKIP line per step as it ends; after a \
                FAIL the rest is SKIP. The lab is taken down at the end. Exit 0 when the guest is ready \
                for `qlab run`, 124 when it did not boot within boot_timeout, 2 for a bad lab file, \
                3 for a lab name qlab does not know, 1 otherwise; 130/143/129 when cancelled. --json prints the report as one document (lines go to stderr).
                """)

        @Argument(help: "The lab file, or the name of a lab started before (its last lab file).", completion: Completions.lab) var lab: String
        @Argument(help: "The guest to check (default: the lab's first).") var guest: String?
        @Flag(help: "Print the report as one JSON document on stdout (the step lines go to stderr).") var json = false

        func run() async throws {
            let (lab, guest, json) = (lab, guest, json)
            try await runCancellable("guest check") { stop in
                var options = GuestCheck.Options()
                options.stop = stop
                let report: GuestCheckReport
                do {
                    report = try await withStandardOutputOnStandardError(json) {
                        let check = try GuestCheck(controller: labController(), labFile: LabRuntime.labFile(for: lab), guest: guest, options: options) { event in
                            Self.printStep(event)
                        }
                        print("qlab guest check: lab \(check.lab.name), guest \(check.guest.name) (\(check.guest.os.rawValue)), strategy \(check.strategy.rawValue), \(check.plan.count) steps")
                        return try await check.run()
                    }
                } catch {
                    if stop.isRequested { return }
                    throw Reported("guest check", error)
                }
                if json {
                    try printJSON(report.json)
                    reportError(report.summaryLine)
                } else {
                    print(report.summaryLine)
                }
                if stop.isRequested { return }
                if report.exitStatus != .success { throw Reported(report.exitStatus) }
            }
        }

        /// One line per step (and its hint, diagnoses and console tail when it failed), written at once.
        static func printStep(_ event: GuestCheck.Event) {
            guard case .step(let step) = event else { return }
            var text = "\(step.status.rawValue.uppercased())  \(step.kind.title)"
            if step.status != .skip { text += String(format: " (%.1f s)", step.seconds) }
            text += ": " + step.detail
            if let hint = step.hint { text += "\n      hint: " + hint }
            for diagnosis in step.diagnoses { text += "\n      [\(diagnosis.id)] \(diagnosis.summary) fix: \(diagnosis.fix)" }
            if let tail = step.consoleTail, !tail.allSatisfy(\.isWhitespace) {
                text += "\n      the console's last lines:\n" + tail.split(separator: "\n", omittingEmptySubsequences: false).map { "      | " + $0 }.joined(separator: "\n")
            }
            FileHandle.standardOutput.write(Data((TerminalText.neutralised(text) + "\n").utf8))
        }
    }
}
