import ArgumentParser
import Foundation
import LabCore
import Platform
import QMP

/// `qlab cards`: the host cards qlab knows of here (docs/cards.md).
struct CardsCommand: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "cards",
        abstract: "List the host cards labs use here: ids, driver, IOMMU group, INTx, holder, health, labs.",
        discussion: """
            Which cards: those running labs pass through, those the lab files given (and every *.yaml \
            in --labs DIR, default $QLAB_LABS_DIR) name, those reserved or health-checked on this host \
            before, and --device. Per card: address, vendor:device ids and name, the runner tag \
            (card:vvvv-dddd), driver, IOMMU group and the doctor's group-viable, intx-masking and \
            intx-shared checks, the lab holding it (lab, command, pid, since), its health (good, bad, \
            unknown; when last checked) and the labs that use it. Reads only. See docs/cards.md.
            """)

    @Argument(help: "Lab files (or names of labs started before) whose cards to list.", completion: Completions.lab)
    var labs: [String] = []

    @Option(help: ArgumentHelp("Also read every lab file (*.yaml, *.yml) in DIR (default: $QLAB_LABS_DIR).", valueName: "DIR"))
    var labsDir: String?

    @Option(name: .customLong("device"), help: ArgumentHelp("Also list this card: a PCI address or ids (9004:5078). Repeatable.", valueName: "BDF"))
    var devices: [String] = []

    @Option(name: .customLong("clear-bad"), help: ArgumentHelp("Return a card marked bad by a failed health check to service (forget its health), then list.", valueName: "BDF"))
    var clearBad: [String] = []

    @Flag(help: "Print JSON: {\"cards\": [{\"address\", \"ids\", \"name\", \"tag\", \"driver\", \"iommu_group\", \"group_viable\", \"intx_masking\", \"intx_shared\", \"holder\", \"health\", \"labs\"}]}.")
    var json = false

    @OptionGroup var host: HostRootOptions

    func validate() throws {
        for text in devices where DeviceSelector(text) == nil {
            throw ValidationError("--device \(text): expected a PCI address such as 0000:03:04.0 or ids such as 9004:5078")
        }
        for text in clearBad where PCIAddress(text) == nil {
            throw ValidationError("--clear-bad \(text): expected a PCI address such as 0000:03:04.0")
        }
    }

    func run() async throws {
        // Reads only: SIGINT/SIGTERM/SIGHUP let it finish what it reads, then exit 130/143/129 as every command does.
        let (clearBad, labs, labsDir, devices, json, roots) = (clearBad, labs, labsDir, devices, json, host.roots)
        try await runCancellable("cards") { _ in
            try Self.list(clearBad: clearBad, labs: labs, labsDir: labsDir, devices: devices, json: json, roots: roots)
        }
    }

    static func list(clearBad: [String], labs: [String], labsDir: String?, devices: [String], json: Bool, roots: HostRoots) throws {
        let environment = currentEnvironment()
        do {
            let store = CardHealthStore(environment: environment)
            for text in clearBad {
                guard let address = PCIAddress(text) else { continue }
                let had = store.clear(address.description)
                reportError("qlab cards: " + (had ? "card \(address): health record removed; it is back in service" : "card \(address): no health record (it was not marked bad)"))
            }
            var files = try labs.map { try LabRuntime.labFile(for: $0) }
            if let directory = labsDir ?? environment["QLAB_LABS_DIR"].flatMap({ $0.isEmpty ? nil : $0 }) {
                guard let names = HostFiles.list(directory) else { throw ValidationError("--labs-dir \(directory): not a readable directory") }
                files += names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.map { directory + "/" + $0 }
            }
            let loaded = try files.map { try Lab.load(path: $0) }
            let inventory = CardInventory(roots: roots, environment: environment)
            let cards = try inventory.cards(labs: loaded, devices: devices.compactMap(DeviceSelector.init))
            if json {
                try printJSON(["cards": .array(cards.map(\.json))])
            } else if cards.isEmpty {
                print("no cards: no running lab passes one through, and no lab file given (qlab cards LAB...) names one")
            } else {
                print(CardInventory.table(cards), terminator: "")
            }
        } catch let error as ValidationError {
            throw error
        } catch {
            throw Reported("cards", error)
        }
    }
}

/// `qlab health LAB`: the lab's health check alone, recorded for its cards.
struct HealthCommand: AsyncParsableCommand, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Run a lab's health check (`health_check:`) and record its cards as good or bad.",
        discussion: "Exit 0 when it passed (a card marked bad is back in service), 1 when it failed (its cards are marked bad), 4 when the lab or a card is busy (another command has it; unless --wait), 130/143 when SIGINT/SIGTERM cancelled it (the lab it booted goes down; no health is recorded). See docs/cards.md.")

    @Argument(help: "The lab file, or the name of a lab started before.", completion: Completions.lab) var lab: String
    @OptionGroup var wait: WaitOptions

    func run() async throws {
        var options = TestRunner.Options()
        options.wait = wait.policy
        let lab = lab
        // SIGINT/SIGTERM/SIGHUP: the check stops, the lab it booted goes down, no health is
        // recorded; exit 130/143/129.
        try await runCancellable("health") { [options] stop in
            var options = options
            options.stop = stop
            let failure: String?
            do {
                let runner = try TestRunner(controller: labController(), labFile: LabRuntime.labFile(for: lab), options: options) { event in
                    if case .note(let text) = event { print(text) }
                }
                failure = try await runner.health()
            } catch {
                if stop.isRequested { return }
                throw Reported("health", error)
            }
            if failure != nil { throw Reported(.failed) }
        }
    }
}
