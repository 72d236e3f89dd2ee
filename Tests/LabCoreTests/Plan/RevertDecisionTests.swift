import Foundation
import LabCore
import QMP
import Testing

/// Which revert method the plan picks, and why (no QEMU started).
@Suite("Revert method decision")
struct RevertDecisionTests {
    /// A private directory for QLAB_RAM_DIR (and the planner's roots), removed by the caller.
    static func makeRoot() throws -> String {
        let root = "/tmp/qrd-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try FileManager.default.createDirectory(atPath: root + "/ram", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: root)
        return root
    }

    static func plan(_ yaml: String, root: String, ramDirectory: String? = nil) throws -> LaunchPlan {
        let lab = try Lab.parse(yaml: yaml, file: root + "/lab.yaml")
        let planner = LabPlanner(
            runtimeRoot: root + "/run", stateRoot: root + "/state", environment: ["QLAB_RAM_DIR": ramDirectory ?? root + "/ram"])
        return try planner.plan(lab: lab, guest: nil)
    }

    static func lab(memory: String = "256M", top: String = "", guestExtra: String = "", devices: String = "") -> String {
        """
        name: rd
        machine: {type: q35, accel: tcg, memory: \(memory)}
        \(top)
        \(devices)
        guests:
          linux: {os: linux, kernel: /k, initrd: /i, disk: /d.qcow2\(guestExtra)}
        """
    }

    @Test func autoIsFastWithRAMInAFileAndSaysWhy() throws {
        let root = try Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let plan = try Self.plan(Self.lab(), root: root)
        #expect(plan.revert.method == .fast)
        #expect(plan.revert.reason == "fast (auto): guest RAM in \(root)/ram/rd/live.ram")
        #expect(plan.argv.contains("memory-backend-file,id=pc.ram,size=256M,mem-path=\(root)/ram/rd/live.ram,share=on"))
        #expect(plan.argv.contains("q35,accel=tcg,memory-backend=pc.ram"))
        #expect(plan.record().revert == plan.revert)
        // Planning makes nothing.
        #expect(!FileManager.default.fileExists(atPath: root + "/ram/rd"))
    }

    @Test func loadvmWithTheReasonWhereFastCannotWork() throws {
        let root = try Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let cases: [(String, String?, String)] = [
            (Self.lab(top: "revert: loadvm"), nil, "loadvm: the lab asks for it (revert: loadvm)"),
            // auto picks what the nested bench measured faster for a hotplugged card (revert-passthrough).
            (Self.lab(devices: "devices:\n  card: {passthrough: {host: \"0000:03:05.0\"}, attach: hotplug}"), nil,
             "loadvm (auto): device card is passed through; measured in L1 with real vfio"),
            (Self.lab(top: "revert: fast", devices: "devices:\n  card: {passthrough: {host: \"0000:03:05.0\"}, attach: boot}"), nil,
             "loadvm (revert: fast was asked): device card is passed through and attached at boot"),
            (Self.lab(top: "qemu_args: [-mem-prealloc]"), nil, "loadvm: qemu_args set guest memory themselves (-mem-prealloc)"),
            // A real filesystem without room for 2 x 100000 GiB.
            (Self.lab(memory: "100000G"), nil, "MiB free, needs 204800000 (the live RAM file and one snapshot image); set QLAB_RAM_DIR"),
            (Self.lab(), root + "/shared", "RAM directory"),
        ]
        try FileManager.default.createDirectory(atPath: root + "/shared", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o777])
        for (yaml, ram, expected) in cases {
            let plan = try Self.plan(yaml, root: root, ramDirectory: ram)
            #expect(plan.revert.method == .loadvm, "\(yaml)")
            #expect(plan.revert.reason.contains(expected), "\(plan.revert.reason)")
            #expect(plan.revert.ramDirectory == nil)
            #expect(!plan.argv.contains { $0.contains("memory-backend") }, "\(plan.argv)")
        }
        let noDisk = try Self.plan("""
            name: rd
            guests:
              linux: {os: linux, kernel: /k, initrd: /i}
            """, root: root)
        #expect(noDisk.revert.reason == "loadvm: guest linux has no disk to hold snapshots")
    }

    /// A hotplugged card is unplugged before every save and revert, so a lab can ask for
    /// `fast`: the card is plugged into each new QEMU.
    @Test func fastAskedWithAHotpluggedCardIsFast() throws {
        let root = try Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let plan = try Self.plan(Self.lab(top: "revert: fast", devices: "devices:\n  card: {passthrough: {host: \"0000:03:05.0\"}, attach: hotplug}"), root: root)
        #expect(plan.revert.method == .fast)
        #expect(plan.revert.reason == "fast (revert: fast; device card is passed through, plugged into each new QEMU): guest RAM in \(root)/ram/rd/live.ram")
        #expect(plan.argv.contains("memory-backend-file,id=pc.ram,size=256M,mem-path=\(root)/ram/rd/live.ram,share=on"))
        #expect(!plan.argv.contains { $0.hasPrefix("vfio-pci") }, "the card is hotplugged, not on the command line")
    }

    @Test func aGuestOverridesTheLabAndBadValuesNameTheLine() throws {
        let root = try Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let plan = try Self.plan(Self.lab(top: "revert: loadvm", guestExtra: ", revert: fast"), root: root)
        #expect(plan.revert.method == .fast)
        #expect(plan.revert.reason.hasPrefix("fast (revert: fast)"))
        let error = #expect(throws: LabFileError.self) {
            _ = try Lab.parse(yaml: "name: rd\nrevert: quick\nguests:\n  g: {os: linux, kernel: /k}\n", file: "/tmp/rd.yaml")
        }
        #expect(error?.line == 2)
        #expect(error?.description.contains("'quick' is not one of auto|fast|loadvm") == true, "\(String(describing: error))")
    }
}
