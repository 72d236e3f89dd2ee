import QMP

extension NestedScenario {
    /// Card reservations on a real kernel, with two labs that want the same group.
    static let cards = NestedScenario(
        id: "cards", title: "one lab at a time has the group: busy, waiting, SIGKILL, inventory",
        proves: "A lab that is up with the slot-2 card reserves its whole IOMMU group: `qlab up` of the slot-1 lab (the group's other card) exits 4 naming that lab, its supervisor and the card of the same group; `qlab cards --json` on L1's live sysfs lists both cards (ids, vfio-pci, the group, the runner tag, the holder); a second lab with the slot-2 card started with `--wait` says once who holds it and comes up once the holder's supervisor and QEMU are SIGKILLed.",
        boot: "bench", needsBoundGroup: true
    ) { context in
        typealias Facts = NestedBenchFacts
        let shell = context.shell
        shell.atEnd("qlab down nested-slot2")
        shell.atEnd("qlab down nested-hotplug")
        shell.atEnd("qlab down nested-slot1")
        let up = try await shell.run("qlab up \(context.lab("slot2"))")
        up.exits(0)

        let busy = try await shell.run("qlab up \(context.lab("slot1")) --force")
        busy.exits(4)
        busy.prints("card \(Facts.slot1) is reserved by lab nested-slot2 (")
        busy.prints("for card \(Facts.slot2) of the same IOMMU group")

        let inventory = try await shell.run("qlab cards --json \(context.lab("slot1")) \(context.lab("slot2"))")
        inventory.exits(0)
        let cards = inventory.json()?["cards"]?.arrayValue ?? []
        inventory.check("lists both cards of the group", cards.map { $0["address"]?.stringValue ?? "" } == [Facts.slot1, Facts.slot2], seen: excerpt(inventory.text, lines: 80))
        inventory.check("both on vfio-pci, in one group, held by nested-slot2",
                        cards.count == 2 && cards.allSatisfy { $0["driver"]?.stringValue == "vfio-pci" && $0["holder"]?["lab"]?.stringValue == "nested-slot2" }
                            && cards[0]["iommu_group"] == cards[1]["iommu_group"], seen: excerpt(inventory.text, lines: 80))
        inventory.check("the slot-2 card's runner tag", cards.last?["tag"]?.stringValue == "card:1000-0012", seen: excerpt(inventory.text, lines: 80))

        // A waiter in the background, then the holder killed as the OOM killer would.
        _ = try await shell.run("rm -f /tmp/waiter.rc; (qlab up \(context.lab("hotplug")) --wait 120s > /tmp/waiter.out 2>&1; echo $? > /tmp/waiter.rc) &")
        let waiting = try await shell.run("cat /tmp/waiter.out", attempts: 20) { $0.text.contains("waiting for card") }
        // The group's cards are reserved in address order: slot 1's comes first, brought in by slot 2's.
        waiting.prints("waiting for card \(Facts.slot1) (in the IOMMU group of card \(Facts.slot2), which this lab passes through): reserved by lab nested-slot2")
        let pids = try await shell.run("qlab status nested-slot2 --json")
        let status = pids.json()
        let supervisor = status?["supervisor_pid"]?.intValue ?? 0
        let qemu = status?["qemu_pid"]?.intValue ?? 0
        pids.check("the holder's pids", supervisor > 0 && qemu > 0)
        let killed = try await shell.run("kill -9 \(supervisor) \(qemu); for i in $(seq 90); do [ -s /tmp/waiter.rc ] && break; sleep 1; done; cat /tmp/waiter.rc /tmp/waiter.out")
        killed.check("the waiter's up exits 0", killed.text.split(separator: "\n").first == "0", seen: excerpt(killed.text))
        killed.prints("lab nested-hotplug up")
        killed.check("said once who held the card", killed.text.components(separatedBy: "waiting for card").count == 2, seen: excerpt(killed.text))
        let after = try await shell.run("qlab cards --json")
        after.check("nested-hotplug holds the group now",
                    (after.json()?["cards"]?.arrayValue ?? []).allSatisfy { $0["holder"]?["lab"]?.stringValue == "nested-hotplug" }, seen: excerpt(after.text, lines: 60))
    }
}
