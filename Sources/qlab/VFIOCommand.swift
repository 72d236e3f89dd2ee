import ArgumentParser
import LabCore

struct VFIOCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vfio",
        abstract: "Bind a device's IOMMU group to vfio-pci, or give it back.",
        subcommands: [Bind.self, Unbind.self])

    struct Options: ParsableArguments {
        @Argument(help: "The device's PCI address, e.g. 0000:03:04.0.")
        var address: String

        @Flag(name: .customLong("dry-run"), help: "Print every sysfs write without making it.")
        var dryRun = false

        @Flag(help: "Print {\"dry_run\", \"steps\": [{\"address\", \"summary\"}], \"writes\": [{\"path\", \"text\"}]} as JSON.")
        var json = false

        @OptionGroup var host: HostRootOptions

        func validate() throws {
            if PCIAddress(address) == nil {
                throw ValidationError("\(address): expected a PCI address such as 0000:03:04.0 (see qlab devices)")
            }
        }

        func binder() -> VFIOBinder {
            let writer = SysfsWriter(dryRun: dryRun)
            if !json { writer.onWrite = { write in print((dryRun ? "would: " : "") + write.description) } }
            return VFIOBinder(roots: host.roots, writer: writer, store: .forCurrentUser())
        }

        /// Runs bind or unbind; errors (refusals, failed writes, a bad state file)
        /// reach ArgumentParser, which prints them and exits 1.
        func run(_ body: (VFIOBinder, PCIAddress) throws -> [VFIOBinder.Step]) throws {
            let binder = binder()
            let steps = try body(binder, PCIAddress(address)!)
            if json {
                return try printJSON([
                    "dry_run": .bool(dryRun), "steps": .array(steps.map(\.json)),
                    "writes": .array(binder.writer.log.map { ["path": .string($0.path), "text": .string($0.text)] }),
                ])
            }
            if steps.isEmpty { print("nothing to do") }
            for step in steps { print("\(step.address): \(step.summary)" + (dryRun ? " (dry run)" : "")) }
        }
    }

    struct Bind: ParsableCommand, JSONReporting, UsesGlobalOptions {
        @OptionGroup(title: "Global options") var global: GlobalOptions
        static let configuration = CommandConfiguration(
            abstract: "Bind the device and every group member with a host driver to vfio-pci (bridges left alone).",
            discussion: """
                Writes driver_override, unbind and drivers_probe, and records the previous drivers \
                in $QLAB_STATE_DIR/vfio-bindings.json (else the XDG state directory) for unbind. \
                Refuses a device holding a mounted filesystem, the console or the default route.
                """)

        @OptionGroup var options: Options
        var json: Bool { options.json }

        @Flag(help: "Bind even a device holding a mounted filesystem, the console or the default route.")
        var force = false

        func run() throws {
            try options.run { binder, address in try binder.bind(address, force: force) }
        }
    }

    struct Unbind: ParsableCommand, JSONReporting, UsesGlobalOptions {
        @OptionGroup(title: "Global options") var global: GlobalOptions
        static let configuration = CommandConfiguration(
            abstract: "Give the device's group back to the drivers it had before qlab vfio bind.")

        @OptionGroup var options: Options
        var json: Bool { options.json }

        func run() throws {
            try options.run { binder, address in try binder.unbind(address) }
        }
    }
}
