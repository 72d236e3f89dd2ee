import ArgumentParser
import LabCore
import QMP

/// `qlab snapshot save|load|list|delete LAB [TAG]`.
struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Save, load, list and delete internal snapshots of a running lab's VM.",
        discussion: """
            Snapshots live in the guest disk's qcow2 overlay (and any other writable qcow2 \
            node). Devices qlab hotplugged are never in a snapshot: save and load unplug them \
            first and attach them back afterwards with fresh disk overlays, and say so. \
            QEMU 6.0+ uses the snapshot-save/-load/-delete jobs, older QEMU HMP savevm/loadvm/delvm.
            """,
        subcommands: [Save.self, Load.self, List.self, Delete.self])

    struct Common: ParsableArguments {
        @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
        @Flag(help: "Use HMP savevm/loadvm/delvm even where the job commands exist.") var hmp = false
        @Flag(help: "Print the result as JSON (unplugs, re-attaches and steps included).") var json = false
        @Flag(help: "Also print each step's time (QMP commands, event waits, host steps).") var steps = false
    }

    static func report(_ result: SnapshotResult, common: Common, verbose: Bool) throws {
        if common.json { return try printJSON(result.json) }
        for detach in result.detached {
            print("unplugged \(detach.device) first: \(detach.method)")
        }
        let verb = ["save": "saved", "load": "loaded", "delete": "deleted"][result.operation] ?? result.operation
        print("snapshot '\(result.tag)' \(verb) (\(result.via), \(formatMilliseconds(result.operationTime)))")
        if result.operation != "delete", !result.methodReason.isEmpty {
            print("revert method \(result.method.rawValue): \(result.methodReason)")
        }
        for attach in result.reattached {
            print("plugged \(attach.device) back in at \(attach.placement)" + (attach.overlays.isEmpty ? "" : " with fresh disk overlays"))
        }
        if verbose { stepLines(result.timings).forEach { print($0) } }
    }

    struct Save: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
        @OptionGroup(title: "Global options") var global: GlobalOptions
        static let configuration = CommandConfiguration(abstract: "Save the VM as snapshot TAG.")
        @OptionGroup var common: Common
        var json: Bool { common.json }
        @Argument(help: "Letters, digits, - _ . : (not all digits), at most 64.") var tag: String
        @Flag(help: "Replace an existing snapshot of this tag.") var replace = false
        @Flag(help: "Leave unplugged devices unplugged afterwards.") var noReattach = false
        @Flag(help: "When the guest does not release a hotplugged device (or the VM is paused), complete the unplug with a system_reset; the reset machine is what gets saved.")
        var resetFallback = false

        func run() async throws {
            var options = SnapshotOptions(backend: common.hmp ? .hmp : .auto, reattach: !noReattach, replace: replace)
            if resetFallback { options.unplugPolicy = .standard }
            try await withLabSession(common.lab, command: "snapshot save") { [options] session in
                try SnapshotCommand.report(try await session.saveSnapshot(tag, options: options), common: common, verbose: common.steps)
            }
        }
    }

    struct Load: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
        @OptionGroup(title: "Global options") var global: GlobalOptions
        static let configuration = CommandConfiguration(abstract: "Load snapshot TAG (hotplugged devices are reset out first).")
        @OptionGroup var common: Common
        var json: Bool { common.json }
        @Argument(help: "The snapshot's tag.", completion: Completions.snapshotTag) var tag: String
        @Flag(help: "Leave unplugged devices unplugged afterwards.") var noReattach = false

        func run() async throws {
            let options = SnapshotOptions(backend: common.hmp ? .hmp : .auto, reattach: !noReattach)
            try await withLabSession(common.lab, command: "snapshot load") { session in
                try SnapshotCommand.report(try await session.loadSnapshot(tag, options: options), common: common, verbose: common.steps)
            }
        }
    }

    struct Delete: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
        @OptionGroup(title: "Global options") var global: GlobalOptions
        static let configuration = CommandConfiguration(abstract: "Delete snapshot TAG.")
        @OptionGroup var common: Common
        var json: Bool { common.json }
        @Argument(help: "The snapshot's tag.", completion: Completions.snapshotTag) var tag: String

        func run() async throws {
            let options = SnapshotOptions(backend: common.hmp ? .hmp : .auto)
            try await withLabSession(common.lab, command: "snapshot delete") { session in
                try SnapshotCommand.report(try await session.deleteSnapshot(tag, options: options), common: common, verbose: common.steps)
            }
        }
    }

    struct List: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
        @OptionGroup(title: "Global options") var global: GlobalOptions
        static let configuration = CommandConfiguration(abstract: "List snapshots: tag, VM state size, date (UTC), VM clock.")
        @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
        @Flag(help: "JSON output.") var json = false

        func run() async throws {
            try await withLabSession(lab, command: "snapshot list") { session in
                let snapshots = try await session.listSnapshots()
                if json {
                    return try printJSON(.array(snapshots.map(\.json)))
                }
                if snapshots.isEmpty {
                    print("no snapshots")
                    return
                }
                let width = max(3, snapshots.map(\.tag.count).max() ?? 0)
                func pad(_ text: String, _ n: Int) -> String { text + String(repeating: " ", count: max(0, n - text.count)) }
                print(pad("TAG", width) + "  " + pad("SIZE", 10) + "  " + pad("DATE (UTC)", 19) + "  VM CLOCK")
                for snapshot in snapshots {
                    var line = pad(snapshot.tag, width) + "  " + pad(snapshot.sizeDescription, 10) + "  "
                    line += pad(snapshot.dateDescription, 19) + "  " + snapshot.vmClockDescription
                    if !snapshot.complete { line += "  (partial: only on \(snapshot.nodes.joined(separator: ", ")); cannot be loaded)" }
                    print(line)
                }
            }
        }
    }
}
