import Foundation
import LabCore
import Platform
import QMP
import Testing

/// Card reservations, `qlab cards` and health checks without QEMU: sysfs
/// trees for the inventory, the lock files of a test's own runtime root.
@Suite("Card reservations and inventory (fixtures)", .serialized)
struct CardReservationTests {
    static let card = PCIAddress.bdf("0000:03:04.0")
    static let dc390 = PCIAddress.bdf("0000:03:05.0")

    /// The original bench with a DC-390 (1022:2020) in slot 5 behind the same bridge:
    /// bridge and both cards in IOMMU group 7.
    static func benchWithTwoCards() throws -> SysfsTreeBuilder {
        let tree = try SysfsTreeBuilder.originalBench()
        try tree.add(.init(address: dc390, vendor: 0x1022, device: 0x2020, classCode: 0x010000, revision: 0x10,
            command: 0x0007, status: 0x0290, interruptPin: 1, irq: 17, driver: "am53c974", group: 7), parent: SysfsTreeBuilder.pericom)
        return tree
    }

    /// A lab passing `host` through, hot-plugged (QEMU starts without it), with the test guest.
    static func cardLab(_ env: QLabTestEnvironment, _ name: String, host: String = "0000:03:04.0", extra: String = "") throws -> String {
        try env.writeGuestLab(name, devices: "  card: {passthrough: {host: \"\(host)\"}, attach: hotplug}", tests: """
              t: {run: "echo hi", expect: hi}
            """, extra: extra)
    }

    /// A card's lock covers its IOMMU group: the other card of group 7 too, never the bridge.
    @Test func aCardsLocksCoverItsWholeGroupButTheBridge() throws {
        let tree = try Self.benchWithTwoCards()
        let planned = CardReservation.lockAddresses(for: [Self.card], sysfs: Sysfs(roots: tree.roots))
        #expect(planned.map(\.lock) == [Self.card, Self.dc390], "\(planned)")
        #expect(planned.allSatisfy { $0.card == Self.card })
        // A card with no group (the IOMMU off, or not in this host) is its own lock only.
        let alone = CardReservation.lockAddresses(for: [PCIAddress.bdf("0000:09:00.0")], sysfs: Sysfs(roots: tree.roots))
        #expect(alone.map(\.lock) == [PCIAddress.bdf("0000:09:00.0")])
    }

    /// Holding the AHA-2930CU reserves the DC-390 of its group: a lab naming the DC-390 is
    /// refused with exit 4 naming the holder and the card that brought the group in;
    /// `--wait 1s` gives up with 124 after saying once who holds it. The lock directory is
    /// 0700 and the lock file 0600. Released (the holder let go), the lab gets past the card.
    @Test func aHeldGroupRefusesTheOtherCardNamingTheHolder() async throws {
        let env = try QLabTestEnvironment(prefix: "qcard")
        defer { env.cleanUp() }
        let tree = try Self.benchWithTwoCards()
        var held = try await CardReservation.take(cards: [Self.card], lab: "holder", roots: tree.roots, environment: env.environment, command: "qlab run holder.yaml")
        #expect(held?.locks.map(\.address) == [Self.card.description, Self.dc390.description])
        let directory = env.runtimeRoot + "/.cards"
        #expect(try FileManager.default.attributesOfItem(atPath: directory)[.posixPermissions] as? Int == 0o700)
        #expect(try FileManager.default.attributesOfItem(atPath: directory + "/pci-0000:03:05.0.lock")[.posixPermissions] as? Int == 0o600)

        // Another lab of this process: the same files, other open files, so flock refuses it.
        await #expect(throws: LabError.self) {
            _ = try await CardReservation.take(cards: [Self.dc390], lab: "other", roots: tree.roots, environment: env.environment)
        }
        let lab = try Self.cardLab(env, "second", host: Self.dc390.description)
        let refused = try env.qlab("run", lab)
        #expect(refused.status == ExitStatus.busy.rawValue, "\(refused.output)")
        #expect(refused.stderr.contains("card 0000:03:05.0 is reserved by lab holder (qlab run holder.yaml, pid \(getpid()), since "), "\(refused.stderr)")
        #expect(refused.stderr.contains("for card 0000:03:04.0 of the same IOMMU group"), "\(refused.stderr)")
        #expect(env.qemuProcesses().isEmpty)

        let timedOut = try env.qlab("run", lab, "--wait", "1s")
        #expect(timedOut.status == ExitStatus.timeout.rawValue, "\(timedOut.output)")
        #expect(timedOut.output.components(separatedBy: "waiting for card 0000:03:05.0: reserved by lab holder").count == 2, "said once: \(timedOut.output)")
        #expect(timedOut.stderr.contains("waited 1 s for card 0000:03:05.0, still held by lab holder"), "\(timedOut.stderr)")

        // `qlab cards` names the holder of both, reading the lab file for the labs using them.
        let cards = try env.qlab("cards", "--json", lab, "--device", Self.card.description,
            "--sysfs", tree.roots.sysfs, "--procfs", tree.roots.procfs, "--devfs", tree.roots.devfs)
        #expect(cards.status == 0, "\(cards.output)")
        let list = try JSONValue.parse(cards.stdout)["cards"]?.arrayValue ?? []
        #expect(list.map { $0["address"]?.stringValue } == [Self.card.description, Self.dc390.description], "\(cards.stdout)")
        #expect(list.allSatisfy { $0["holder"]?["lab"] == "holder" && $0["holder"]?["pid"]?.intValue == Int(getpid()) }, "\(cards.stdout)")
        #expect(list[1]["labs"] == ["second"] && list[0]["labs"] == [], "\(cards.stdout)")

        #expect(held != nil)
        held = nil
        let free = try await CardReservation.take(cards: [Self.dc390], lab: "other", roots: tree.roots, environment: env.environment)
        #expect(free?.locks.map(\.address) == [Self.card.description, Self.dc390.description])
    }

    /// The inventory of the original bench: ids, name, runner tag, driver, group, the
    /// doctor's verdicts (group viable, INTx masking, the shared line), no holder, health
    /// unknown, and the labs (from a lab directory) that use the card.
    @Test func theInventoryReadsTheBenchAsTheDoctorDoes() throws {
        let env = try QLabTestEnvironment(prefix: "qcard")
        defer { env.cleanUp() }
        let tree = try SysfsTreeBuilder.originalBench()
        _ = try Self.cardLab(env, "bench")
        _ = try env.writeLab("bench-ids", "name: bench-ids\ndevices:\n  card: {passthrough: {ids: \"9004:5078\"}}\nguests: {g: {os: linux, kernel: /nonexistent/k}}\n")
        let result = try env.qlab("cards", "--json", "--labs-dir", env.labDirectory,
            "--sysfs", tree.roots.sysfs, "--procfs", tree.roots.procfs, "--devfs", tree.roots.devfs)
        #expect(result.status == 0, "\(result.output)")
        let card = try #require(try JSONValue.parse(result.stdout)["cards"]?.arrayValue?.first)
        #expect(card["address"] == "0000:03:04.0" && card["present"] == true)
        #expect(card["ids"] == "9004:5078" && card["tag"] == "card:9004-5078")
        #expect(card["name"]?.stringValue?.contains("AIC-7850") == true, "\(card)")
        #expect(card["driver"] == "aic7xxx" && card["iommu_group"] == 7)
        // Bound to aic7xxx, the group is viable only once vfio-pci has it; the AIC-7850
        // cannot mask INTx and shares IRQ 16 with ehci_hcd:usb1.
        #expect(card["group_viable"]?["status"] == "pass", "\(card)")
        #expect(card["intx_masking"]?["status"] == "warn", "\(card)")
        #expect(card["intx_shared"]?["status"] == "fail", "\(card)")
        #expect(card["intx_shared"]?["detail"]?.stringValue?.contains("ehci_hcd:usb1") == true, "\(card)")
        #expect(card["holder"] == .null)
        #expect(card["health"]?["status"] == "unknown")
        #expect(card["labs"] == ["bench", "bench-ids"], "\(card)")

        let table = try env.qlab("cards", "--labs-dir", env.labDirectory, "--sysfs", tree.roots.sysfs, "--procfs", tree.roots.procfs, "--devfs", tree.roots.devfs)
        #expect(table.stdout.contains("0000:03:04.0  9004:5078"), "\(table.output)")
        #expect(table.stdout.contains("free") && table.stdout.contains("bench,bench-ids"), "\(table.output)")
    }

    /// `health_check: doctor` failing (the card is not in this machine): `qlab run` runs no
    /// entry, each an error naming the check; the card is marked bad with the reason; the
    /// next run fails fast saying so; `qlab cards` shows it; `--clear-bad` returns it.
    /// `qlab health` fails the same way (exit 1) and marks it again. A `health_check` that
    /// names no test is refused at load, naming the field (exit 2).
    @Test func aFailedHealthCheckTakesTheCardOutOfService() throws {
        let env = try QLabTestEnvironment(prefix: "qcard")
        defer { env.cleanUp() }
        let lab = try Self.cardLab(env, "checked", host: "0000:7f:1f.7", extra: "health_check: doctor")
        let json = env.root + "/report.json"
        let first = try env.qlab("run", lab, "--json-report", json)
        #expect(first.status == ExitStatus.infrastructure.rawValue, "\(first.output)")
        let report = try TestReport(path: json)
        #expect(!report.results.isEmpty && report.results.allSatisfy { $0.outcome == .error && $0.message.hasPrefix("health check doctor failed: ") },
            "\(report.results.map(\.message))")
        #expect(report.results.first?.message.contains("device-present") == true, "\(report.results.map(\.message))")
        #expect(env.qemuProcesses().isEmpty)

        let cards = try env.qlab("cards", "--json")
        let card = try #require(try JSONValue.parse(cards.stdout)["cards"]?.arrayValue?.first, "\(cards.output)")
        #expect(card["address"] == "0000:7f:1f.7")
        #expect(card["health"]?["status"] == "bad" && card["health"]?["check"] == "doctor" && card["health"]?["lab"] == "checked", "\(card)")
        #expect(card["health"]?["checked_at"]?.stringValue?.hasSuffix("Z") == true, "\(card)")

        let second = try env.qlab("run", lab, "--json-report", json)
        #expect(second.status == ExitStatus.infrastructure.rawValue, "\(second.output)")
        let refused = try TestReport(path: json)
        #expect(refused.results.allSatisfy { $0.outcome == .error && $0.message.hasPrefix("card 0000:7f:1f.7 is marked bad: bad since ") },
            "\(refused.results.map(\.message))")

        let cleared = try env.qlab("cards", "--clear-bad", "0000:7f:1f.7", "--json")
        #expect(cleared.status == 0 && cleared.stderr.contains("back in service"), "\(cleared.output)")
        // Still listed (reserved here before: its lock file), its health unknown again.
        #expect(try JSONValue.parse(cleared.stdout)["cards"]?[0]?["health"]?["status"] == "unknown", "\(cleared.stdout)")

        let health = try env.qlab("health", lab)
        #expect(health.status == 1, "\(health.output)")
        #expect(health.stdout.contains("health check doctor: failed: "), "\(health.output)")
        let again = try JSONValue.parse(try env.qlab("cards", "--json").stdout)["cards"]?[0]
        #expect(again?["health"]?["status"] == "bad", "\(String(describing: again))")

        let bad = try Self.cardLab(env, "misnamed", extra: "health_check: smoke")
        let loadError = try env.qlab("run", bad)
        #expect(loadError.status == ExitStatus.usage.rawValue, "\(loadError.output)")
        #expect(loadError.stderr.contains("health_check") && loadError.stderr.contains("'smoke' is neither a test"), "\(loadError.stderr)")
    }
}

/// Card reservations held by real labs: QEMU 7.2 (TCG) and the test guest, the card
/// hot-plugged so QEMU starts without it here (`up --force`: this machine has no such card).
@Suite("Card reservations (real QEMU)", .serialized)
struct CardReservationQEMUTests {
    /// A lab that is up holds its card through its supervisor and QEMU (`qlab up` itself
    /// has ended): a run naming the card exits 4 naming the lab, the supervisor's pid and
    /// `qlab up`; an `up --wait` waits, saying who holds it once; the holder's supervisor
    /// and QEMU SIGKILLed (as the OOM killer would), the kernel drops the lock and the
    /// waiter's lab comes up holding the card.
    @Test func aWaiterProceedsWhenTheHolderIsKilled() async throws {
        let env = try QLabTestEnvironment.withGuestImages(prefix: "qcard")
        defer { env.cleanUp() }
        let holderLab = try CardReservationTests.cardLab(env, "holder")
        let waiterLab = try CardReservationTests.cardLab(env, "waiter")
        let holder = try LabHolder.up(env, ["--force", holderLab], name: "holder")
        let record = try #require(try env.runtime("holder").record)

        holder.expectRefused(try env.qlab("run", waiterLab), saying: "card 0000:03:04.0 is reserved by lab holder (\(holder.command) (its supervisor), pid")

        let waiter = try BackgroundQLab(env, ["up", "--force", "--wait", "120s", waiterLab])
        #expect(waitUntil(limit: .seconds(60)) { waiter.stderr.contains("waiting for card 0000:03:04.0: reserved by lab holder") }, "\(waiter.stderr)")
        #expect(waiter.process.isRunning, "\(waiter.stderr)")
        // Both are this test's children's children, verified by the record's pids and start times.
        #expect(env.runtime("holder").liveQEMU(record) == record.qemuPID)
        #expect(env.runtime("holder").liveSupervisor(record) == record.supervisorPID)
        kill(record.supervisorPID, SIGKILL)
        kill(record.qemuPID, SIGKILL)
        #expect(waiter.finish() == 0, "\(waiter.stdout)\(waiter.stderr)")
        #expect(waiter.stdout.contains("lab waiter up"), "\(waiter.stdout)")
        #expect(waiter.stderr.components(separatedBy: "waiting for card").count == 2, "said once: \(waiter.stderr)")

        let cards = try JSONValue.parse(try env.qlab("cards", "--json").stdout)["cards"]?[0]
        let waiterRecord = try #require(try env.runtime("waiter").record)
        #expect(cards?["holder"]?["lab"] == "waiter" && cards?["holder"]?["pid"]?.intValue == Int(waiterRecord.supervisorPID), "\(String(describing: cards))")
        #expect(try env.qlab("down", "waiter").status == 0)
        let after = try JSONValue.parse(try env.qlab("cards", "--json").stdout)["cards"]?[0]
        #expect(after?["holder"] == .null, "released with the lab: \(String(describing: after))")
    }

    /// An emulated lab whose health check (a test) fails: the check boots the guest and
    /// runs once; no entry of the matrix runs, each is an `error` naming the check and
    /// what it found; the report has the one boot. The check passing, the matrix runs.
    @Test func aFailingHealthCheckRunsNoEntry() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment(prefix: "qcard")
        defer { env.cleanUp() }
        let tests = """
              smoke: {run: "test -e /tmp/healthy", expect: ""}
              one: {run: "echo one", expect: one}
              two: {run: "echo two", expect: two}
            """
        let lab = try env.writeGuestLab("health", devices: "  {}", tests: tests, extra: "health_check: smoke")
        let json = env.root + "/report.json"
        let run = try env.qlab("run", lab, "--test", "one", "--test", "two", "--json-report", json)
        #expect(run.status == ExitStatus.infrastructure.rawValue, "\(run.output)")
        #expect(run.stdout.contains("note: health check smoke of lab health"), "\(run.stdout)")
        let report = try TestReport(path: json)
        #expect(report.results.map(\.entry.test) == ["one", "two"])
        #expect(report.results.allSatisfy { $0.outcome == .error && $0.message.hasPrefix("health check smoke failed: smoke on linux: failed") },
            "\(report.results.map(\.message))")
        #expect(env.qemuProcesses().isEmpty)

        // Passing, the matrix runs after it (and the check is not one of its results).
        let healthy = try env.writeGuestLab("healthy", devices: "  {}", tests: """
              smoke: {run: "echo fine", expect: fine}
              one: {run: "echo one", expect: one}
            """, extra: "health_check: smoke")
        let passing = try env.qlab("run", healthy, "--test", "one", "--json-report", json)
        #expect(passing.status == 0, "\(passing.output)")
        #expect(passing.stdout.contains("note: health check smoke: passed"), "\(passing.stdout)")
        #expect(try TestReport(path: json).results.map { "\($0.entry.test) \($0.outcome)" } == ["one passed"])
    }
}
