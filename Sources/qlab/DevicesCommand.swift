import ArgumentParser
import LabCore
import QMP

struct DevicesCommand: ParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "devices",
        abstract: "List the host's PCI devices and whether each can be passed through.",
        discussion: """
            Columns: address, vendor:device ids and name where qlab knows it, class, IOMMU group, \
            driver, IRQ (for devices with an INTx pin), INTx masking (yes/no/unknown), and a verdict: \
            ready (bound to vfio-pci, nothing fails), bindable (qlab vfio bind), blocked (the failing \
            doctor checks in parentheses), bridge. Reads only; never probes.
            """)

    @Flag(help: "Print JSON: an array of devices.")
    var json = false

    @OptionGroup var host: HostRootOptions

    func run() throws {
        let rows = DeviceSummary.all(roots: host.roots)
        if json {
            try printJSON(.array(rows.map(\.json)))
        } else {
            print(DeviceSummary.table(rows), terminator: "")
        }
    }
}
