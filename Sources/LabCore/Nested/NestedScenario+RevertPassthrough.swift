/// Scenario `revert-passthrough` (issue 20): the two revert methods for a lab
/// with a passed-through card, measured where vfio pins guest RAM for real.
extension NestedScenario {
    /// The root-bus card (lsi53c895a, like the slot-2 card): the loadvm lab's, since one
    /// card serves one QEMU and qlab refuses two labs on one card. Its IOMMU group is its own.
    static let loadvmCard = NestedBenchFacts.rootCard
    /// The two L2 RAM sizes. Not 256M: with the shared copies (three images of the fast lab's
    /// RAM in /dev/shm) and what earlier scenarios leave in L1's RAM, 256 MiB exhausts L1's
    /// 2 GiB and an L2 QEMU dies (docs/devices-snapshots.md has 256 MiB measured in a fresh L1).
    static let measuredSizes = ["64M", "192M"]

    static let revertPassthrough = NestedScenario(
        id: "revert-passthrough", title: "measure: fast against loadvm reverts with a passed-through card",
        proves: "Both revert methods work for a lab whose card is passed through and hotplugged: `qlab-bench revert --passthrough` in L1 reverts a firmware-only L2 with dirty RAM (64 MiB and 192 MiB) and plugs the card back until query-pci lists it, fast (a fresh QEMU on a copy-on-write map of the RAM image, the card's vfio pinning every page), fast on a copy of the image made during the revert and mapped share=on (pinned in place), the same on a copy made beforehand, and loadvm, interleaved, and prints each one's ratio to loadvm per size. A measurement: it runs only when named.",
        boot: "bench", needsBoundGroup: true, onlyWhenNamed: true
    ) { context in
        let shell = context.shell
        shell.atEnd("qlab vfio unbind \(loadvmCard)")
        let bind = try await shell.run("qlab vfio bind \(loadvmCard)")
        bind.exits(0)
        bind.prints("\(loadvmCard): sym53c8xx → vfio-pci")
        let bench = try await shell.run(
            "\(ShellQuoting.quote(context.benchExecutable)) revert --passthrough \(Facts.slot2),\(loadvmCard) --memory \(measuredSizes.joined(separator: ",")) --runs 5",
            timeout: .seconds(3600))
        bench.exits(0)
        for size in measuredSizes {
            for variant in ["fast", "fast-copy", "fast-premade"] {
                bench.check("a ratio \(variant)/loadvm for \(size)", bench.text.contains("ratio \(variant)/loadvm \(size) "), seen: excerpt(bench.text))
            }
        }
        bench.prints("summary: ")
    }
}
