import Foundation
@testable import LabCore
import Platform
import QMP
import Testing

/// The nested bench (issue 6) end to end: L1 boots from labs/nested-bench.yaml under real
/// QEMU, the built qlab runs inside it against L1's kernel, and every scenario must pass.
/// Plus the pieces that need no QEMU: the lab files, the scenario catalog, the JSON helpers.
@Suite("Nested bench", .serialized)
struct NestedBenchTests {
    static let repository = QLabTestEnvironment.repositoryRoot
    static let benchLab = repository + "/labs/nested-bench.yaml"
    static var haveBenchImage: Bool {
        FileManager.default.fileExists(atPath: QLabTestEnvironment.imagesOut + "/bench/vmlinuz")
            && FileManager.default.fileExists(atPath: QLabTestEnvironment.imagesOut + "/bench/initrd.img")
            && FileManager.default.fileExists(atPath: QLabTestEnvironment.imagesOut + "/linux/disk.qcow2")
    }

    @Test func theBenchLabDescribesL1() throws {
        let lab = try Lab.load(path: Self.benchLab)
        #expect(lab.name == "nested-bench")
        #expect(lab.guests.map(\.name) == ["bench", "control", "interactive"])
        #expect(lab.guest(named: "interactive")?.append?.contains("qlab.nointxmask=1 qlab.echo=1") == true)
        #expect(lab.guest(named: "bench")?.append?.contains("qlab.nointxmask=1") == true)
        #expect(lab.guest(named: "control")?.append?.contains("qlab.nointxmask=0") == true)
        for guest in lab.guests {
            #expect(guest.append?.contains("intel_iommu=on iommu=pt") == true, "\(guest.name)")
        }
        let runtime = QEMURuntime.standard(
            lab: lab, guest: lab.guests[0], runtimeDirectory: "/tmp/r", stateDirectory: "/tmp/s", accel: AccelDecision(.tcg, reason: "test"))
        let argv = try QEMUCommandLine.build(lab: lab, guest: "bench", runtime: runtime).argv
        let line = argv.joined(separator: " ")
        for expected in [
            "-device pcie-pci-bridge,id=qlab-pcibr0,bus=pcie.0,addr=0x5",
            "-device am53c974,id=slot1-am53c974,bus=qlab-pcibr0,addr=0x1",
            "-device lsi53c895a,id=slot2-lsi53c895a,bus=qlab-pcibr0,addr=0x2",
            "-device lsi53c895a,id=root-lsi53c895a,bus=pcie.0,addr=0x6",
            "-device intel-iommu,intremap=on", "-machine kernel-irqchip=split",
            "-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-m 2048M", "-smp 2", "-cpu max",
        ] {
            #expect(line.contains(expected), "missing \(expected) in \(line)")
        }
    }

    @Test func theLevel2LabsPassTheBridgeCardsThrough() throws {
        let expected = [("slot1", "0000:01:01.0", Attach.boot), ("slot2", "0000:01:02.0", .boot), ("hotplug", "0000:01:02.0", .hotplug)]
        for (name, host, attach) in expected {
            let lab = try Lab.load(path: Self.repository + "/labs/nested/\(name).yaml")
            #expect(lab.name == "nested-\(name)")
            let card = try #require(lab.device(named: "card"))
            #expect(card.passthrough?.host.description == host)
            #expect(card.attach == attach)
        }
    }

    @Test func scenariosAreSelectedInRunOrder() throws {
        #expect(NestedScenario.all.map(\.id) == ["doctor", "bind", "intx-busy", "slot-fix", "hotplug", "snapshot", "cards", "revert-passthrough", "control"])
        // The measurement runs only when named.
        #expect(try NestedBench.select([]).map(\.id) == ["doctor", "bind", "intx-busy", "slot-fix", "hotplug", "snapshot", "cards", "control"])
        #expect(try NestedBench.select(["revert-passthrough"]).map(\.id) == ["revert-passthrough"])
        #expect(try NestedBench.select(["control", "doctor"]).map(\.id) == ["doctor", "control"])
        #expect(NestedScenario.all.filter { $0.boot == "control" }.map(\.id) == ["control"])
        #expect(throws: NestedBench.BenchError.self) { try NestedBench.select(["doctor", "nope"]) }
    }

    @Test func jsonHelpersFindDoctorChecksAndCardsBehindBridges() throws {
        let doctor = try JSONValue.parse(#"""
            {"ok": false, "host": [], "devices": [
              {"address": "0000:01:01.0", "checks": [{"id": "intx-shared", "status": "fail", "detail": "taken by sym53c8xx", "hint": "slots 02"}]},
              {"address": "0000:01:02.0", "checks": [{"id": "intx-shared", "status": "pass", "detail": "IRQ 23", "hint": ""}]}]}
            """#)
        #expect(doctorChecks(doctor, device: "0000:01:01.0")["intx-shared"]?.status == "fail")
        #expect(doctorChecks(doctor, device: "0000:01:02.0")["intx-shared"]?.status == "pass")
        #expect(doctorChecks(doctor, device: "0000:01:03.0").isEmpty)
        let pci = try JSONValue.parse(#"""
            [{"bus": 0, "devices": [{"qdev_id": "qlab-pcibr0", "pci_bridge": {"devices": [
              {"qdev_id": "card", "id": {"vendor": 4096, "device": 18}}]}}]}]
            """#)
        #expect(queryPCIDevice(pci, id: "card")?["id"]?["device"]?.intValue == 18)
        #expect(queryPCIDevice(pci, id: "other") == nil)
    }

    /// Every scenario, for real: two L1 boots (nointxmask=1, then 0), about two minutes under TCG.
    @Test(.enabled(if: haveBenchImage, "images/out/bench or images/out/linux/disk.qcow2 not built: run images/build.sh (needs apt-get access to Debian's packages)"))
    func everyScenarioPassesInL1() async throws {
        let environment = try QLabTestEnvironment(prefix: "qln")
        defer { environment.cleanUp() }
        let bench = NestedBench(labFile: Self.benchLab, qlabExecutable: QLabTestEnvironment.qlabExecutable, controller: environment.controller)
        let runDirectory = try bench.newRunDirectory()
        #expect(runDirectory.hasPrefix(environment.stateRoot + "/nested-bench/nested-runs/"))
        let scenarios = try NestedBench.select([])
        let report = try await bench.run(scenarios, runDirectory: runDirectory) { _ in }

        #expect(report.scenarios.map(\.id) == scenarios.map(\.id))
        for scenario in report.scenarios {
            let failed = scenario.steps.filter { !$0.passed && !$0.cleanup }.map { step in
                "$ \(step.command) [exit \(step.exitStatus.map(String.init) ?? "-")]\n" + step.output + "\n"
                    + step.checks.filter { !$0.passed }.map { "FAIL \($0.what): \($0.seen ?? "")" }.joined(separator: "\n")
                    + (step.error.map { "\nERROR \($0)" } ?? "")
            }
            #expect(scenario.outcome == .pass, "\(scenario.id): \(scenario.failure ?? "")\n\(failed.joined(separator: "\n"))")
            #expect(!scenario.steps.isEmpty, "\(scenario.id) ran no step")
            #expect(scenario.steps.flatMap(\.checks).count >= 3, "\(scenario.id) checked too little")
        }
        #expect(report.boots.map(\.guest) == ["bench", "control"])
        for boot in report.boots {
            #expect(boot.error == nil, "\(boot.guest): \(boot.error ?? "")")
            let log = try #require(boot.consoleLog)
            // A serial log may hold bytes that are not UTF-8 (firmware output, a line cut by a reset).
            let text = String(decoding: try Data(contentsOf: URL(fileURLWithPath: log)), as: UTF8.self)
            #expect(text.contains("qlab-bench: root=overlay nointxmask=\(boot.guest == "control" ? "N" : "Y")"), "\(log)")
        }
        #expect(report.passed)
        let saved = try #require(FileSystem.readJSON(runDirectory + "/report.json"))
        #expect(saved["ok"]?.boolValue == true)
        #expect(saved["scenarios"]?.arrayValue?.count == 8)
        // L1 is down, and with it every QEMU inside it.
        #expect(environment.qemuProcesses().isEmpty)
        #expect(try environment.runtime("nested-bench").record == nil)
    }

    /// The checks can fail on the real bench: the control scenario's claims run with
    /// nointxmask=1 must fail where the doctor predicts the EBUSY failure, and L1 still goes down.
    @Test(.enabled(if: haveBenchImage, "images/out/bench or images/out/linux/disk.qcow2 not built: run images/build.sh"))
    func theControlClaimsFailWithNoINTxMasking() async throws {
        let environment = try QLabTestEnvironment(prefix: "qln")
        defer { environment.cleanUp() }
        let bench = NestedBench(labFile: Self.benchLab, qlabExecutable: QLabTestEnvironment.qlabExecutable, controller: environment.controller)
        var misplaced = NestedScenario.control
        misplaced.boot = "bench"
        let report = try await bench.run([misplaced], runDirectory: try bench.newRunDirectory()) { _ in }
        let result = try #require(report.scenarios.first)
        #expect(result.outcome == .fail)
        #expect(!report.passed)
        let doctor = try #require(result.steps.first { $0.command.hasPrefix("qlab doctor") })
        #expect(doctor.exitStatus == 1)
        #expect(doctor.checks.contains { $0.what == "0000:01:01.0 intx-shared: pass" && !$0.passed })
        let up = try #require(result.steps.first { $0.command == "qlab up labs/nested/slot1.yaml" })
        #expect(up.exitStatus == 1 && up.output.contains("host checks failed"), "\(up.output)")
        // Clean-up ran, and L1 is gone.
        #expect(result.steps.contains { $0.cleanup && $0.command == "qlab down nested-slot1" })
        #expect(environment.qemuProcesses().isEmpty)
    }
}
