import Foundation
import LabCore
import Testing

/// The device dimension with real QEMU (TCG): GRUB (no hotplug) boots once per
/// device with only that device on QEMU's command line; the Linux guest boots
/// once and has only the entry's device plugged; hooks, selection and reports.
@Suite("Device dimension runs (real GRUB and Linux under TCG)", .serialized)
struct DeviceMatrixRunTests {
    /// Two controllers with the target disk, each run's device in its own cell.
    static let devices = """
          scsi-lsi:
            emulated: {driver: lsi53c895a, disks: [{image: \(QLabTestEnvironment.imagesOut)/scsi-target.qcow2}]}
            attach: hotplug
          scsi-am:
            emulated: {driver: am53c974, disks: [{image: \(QLabTestEnvironment.imagesOut)/scsi-target.qcow2}]}
            attach: hotplug
        """
    /// Each entry's hook copies the lab record and writes its device variables to `out`.
    static func hooks(_ out: String) -> String {
        """
        hooks:
          before_each: >-
            cp "$(dirname "$QLAB_QMP_SOCKET")/lab.json" "\(out)/$QLAB_DEVICE-$QLAB_TEST.record" &&
            printf '%s|%s|%s\\n' "$QLAB_DEVICE" "$QLAB_DEVICE_HOST" "$QLAB_TEST" > "\(out)/$QLAB_DEVICE-$QLAB_TEST.env"
        """
    }

    static func results(_ path: String) throws -> (results: [[String: Any]], boots: [[String: Any]]) {
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        return (try #require(json["results"] as? [[String: Any]]), try #require(json["boots"] as? [[String: Any]]))
    }

    static func record(_ path: String) throws -> (argv: [String], states: [String: String]) {
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        let argv = try #require(json["argv"] as? [String])
        let devices = try #require(json["devices"] as? [[String: Any]])
        return (argv, Dictionary(uniqueKeysWithValues: devices.map { ($0["name"] as! String, $0["state"] as! String) }))
    }

    static func deviceArguments(_ argv: [String]) -> [String] {
        argv.indices.filter { $0 > 0 && argv[$0 - 1] == "-device" }.map { argv[$0] }
    }

    @Test
    func grubBootsOncePerDeviceWithOnlyThatDevice() throws {
        guard GrubGuestTests.haveImage else { throw GrubGuestTests.ImageMissing(path: GrubGuestTests.grubImage) }
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let out = env.root + "/hooks"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let lab = try env.writeLab("dmg", """
            name: dmg
            machine: {type: q35, accel: tcg, memory: 128M, smp: 1}
            matrix: {devices: each}
            devices:
            \(Self.devices)
            guests:
              grub:
                os: grub
                kernel: \(GrubGuestTests.grubImage)
                ready: qlab-guest-ready
                prompt: "grub> "
                boot_timeout: 120s
            tests:
              controllers:
                run: lspci
              disk:
                run: ls (hd0)
                expect: "Total size 16384KiB"
            \(Self.hooks(out))
            """)
        let report = env.root + "/report.json"
        let junit = env.root + "/junit.xml"
        let html = env.root + "/report.html"
        let run = try env.qlab(["run", lab, "--json-report", report, "--junit", junit, "--html", html])
        #expect(run.status == 0, "\(run.output)")
        let (results, boots) = try Self.results(report)
        #expect(results.map { "\($0["device"] as? String ?? "-")/\($0["test"] as? String ?? "-")" } == [
            "scsi-lsi/controllers", "scsi-lsi/disk", "scsi-am/controllers", "scsi-am/disk",
        ])
        // A boot per device.
        #expect(boots.count == 2)
        // GRUB's lspci sees only the entry's controller (1000:0012 lsi, 1022:2020 am).
        let ids = ["scsi-lsi": "1000:0012", "scsi-am": "1022:2020"]
        for result in results where result["test"] as? String == "controllers" {
            let device = try #require(result["device"] as? String)
            let output = result["output"] as? String ?? ""
            for (name, id) in ids { #expect(output.contains(id) == (name == device), "\(device): \(output)") }
        }
        // QEMU's command line and the record: only that device attached; the hooks' environment.
        for (device, driver) in [("scsi-lsi", "lsi53c895a"), ("scsi-am", "am53c974")] {
            let record = try Self.record(out + "/\(device)-controllers.record")
            let drivers = Self.deviceArguments(record.argv).map { String($0.prefix { $0 != "," }) }
            #expect(drivers.contains(driver))
            #expect(!drivers.contains(driver == "lsi53c895a" ? "am53c974" : "lsi53c895a"), "\(drivers)")
            #expect(record.states == [device: "boot", (device == "scsi-lsi" ? "scsi-am" : "scsi-lsi"): "detached"])
            let hookEnv = try String(contentsOfFile: out + "/\(device)-disk.env", encoding: .utf8)
            #expect(hookEnv == "\(device)||disk\n")
        }
        // JUnit and HTML name the device.
        let xml = try String(contentsOfFile: junit, encoding: .utf8)
        #expect(xml.contains(#"classname="dmg.grub.scsi-am" name="disk""#))
        #expect(xml.contains(#"<property name="device" value="scsi-lsi"/>"#))
        let page = try String(contentsOfFile: html, encoding: .utf8)
        #expect(page.contains(#"<th scope="row">grub · scsi-am</th>"#))
        #expect(env.qemuProcesses().isEmpty)

        // --device with --test: one device, one test, one boot.
        let one = try env.qlab(["run", lab, "--device", "scsi-am", "--test", "disk", "--guest", "grub", "--json-report", report])
        #expect(one.status == 0, "\(one.output)")
        let (selected, selectedBoots) = try Self.results(report)
        #expect(selected.map { "\($0["device"] as? String ?? "-")/\($0["test"] as? String ?? "-")" } == ["scsi-am/disk"])
        #expect(selectedBoots.count == 1)
        // An unknown device: exit 2 with the known ones, nothing started.
        let unknown = try env.qlab(["run", lab, "--device", "scsi-xx"])
        #expect(unknown.status == 2)
        #expect(unknown.output.contains("no device 'scsi-xx' in the lab's matrix; its devices: scsi-lsi, scsi-am"), "\(unknown.output)")
        #expect(env.qemuProcesses().isEmpty)
    }

    @Test
    func linuxPlugsOnlyTheEntrysDeviceInOneBoot() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let out = env.root + "/hooks"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        // The SCSI disks the guest has, and the PCI device ids on its bus.
        let lab = try env.writeGuestLab("dml", devices: Self.devices, tests: """
              scan:
                run: >-
                  qlab-scsi-scan -w 20 -n 1 >/dev/null; echo "disks: $(ls /sys/class/scsi_disk | wc -l)";
                  cat /sys/bus/pci/devices/*/device | tr '\\n' ' '
                expect: "disks: 1"
            """, extra: "matrix: {devices: [scsi-am, scsi-lsi]}\n" + Self.hooks(out))
        let report = env.root + "/report.json"
        let run = try env.qlab(["run", lab, "--json-report", report])
        #expect(run.status == 0, "\(run.output)")
        let (results, boots) = try Self.results(report)
        #expect(results.map { $0["device"] as? String ?? "-" } == ["scsi-lsi", "scsi-am"])
        #expect(boots.count == 1, "a hotplug guest boots once")
        let ids = ["scsi-lsi": "0x0012", "scsi-am": "0x2020"]
        for result in results {
            let device = try #require(result["device"] as? String)
            let output = result["output"] as? String ?? ""
            for (name, id) in ids { #expect(output.contains(id) == (name == device), "\(device): \(output)") }
            let hookEnv = try String(contentsOfFile: out + "/\(device)-scan.env", encoding: .utf8)
            #expect(hookEnv == "\(device)||scan\n")
            // The ready snapshot's QEMU has neither card on its command line.
            let record = try Self.record(out + "/\(device)-scan.record")
            #expect(!Self.deviceArguments(record.argv).contains { $0.hasPrefix("lsi53c895a") || $0.hasPrefix("am53c974") })
        }

        // --jobs 2: the lab and a clone share the entries; each still has only its device.
        let parallel = try env.qlab(["run", lab, "--jobs", "2", "--json-report", report])
        #expect(parallel.status == 0, "\(parallel.output)")
        let (shared, _) = try Self.results(report)
        #expect(Set(shared.compactMap { $0["device"] as? String }) == ["scsi-lsi", "scsi-am"])
        for result in shared {
            let device = try #require(result["device"] as? String)
            let output = result["output"] as? String ?? ""
            for (name, id) in ids { #expect(output.contains(id) == (name == device), "\(device): \(output)") }
        }
        #expect(env.qemuProcesses().isEmpty)
    }

    /// labs/bios-scsi-matrix.yaml as CI runs it: every cell passes (GRUB x 8
    /// controllers, Linux x 7), GRUB booting once per controller; and
    /// labs/emulated-grub.yaml's firmware-level checks (size, sector 0).
    @Test
    func biosScsiMatrixLabPassesEveryCell() throws {
        guard GrubGuestTests.haveImage else { throw GrubGuestTests.ImageMissing(path: GrubGuestTests.grubImage) }
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let report = env.root + "/bios-scsi.json"
        let run = try env.qlab(["run", QLabTestEnvironment.repositoryRoot + "/labs/bios-scsi-matrix.yaml", "--json-report", report])
        #expect(run.status == 0, "\(run.output)")
        let (results, boots) = try Self.results(report)
        let cells = results.map { "\($0["guest"] as? String ?? "-")/\($0["device"] as? String ?? "-")/\($0["test"] as? String ?? "-")" }
        let controllers = ["scsi-lsi", "scsi-am", "scsi-dc390", "scsi-mptsas", "scsi-megasas", "scsi-megasas2", "scsi-pvscsi", "scsi-virtio"]
        let expected = controllers.flatMap { ["grub/\($0)/bios-disk", "grub/\($0)/bios-sector0"] }
            + controllers.filter { $0 != "scsi-mptsas" }.map { "linux/\($0)/target" }
        #expect(cells == expected)
        #expect(results.allSatisfy { $0["outcome"] as? String == "passed" }, "\(run.output)")
        // A boot per controller for GRUB, one for Linux.
        #expect(boots.filter { $0["guest"] as? String == "grub" }.count == 8)
        #expect(boots.filter { $0["guest"] as? String == "linux" }.count == 1)

        let grub = try env.qlab(["run", QLabTestEnvironment.repositoryRoot + "/labs/emulated-grub.yaml"])
        #expect(grub.status == 0, "\(grub.output)")
        #expect(grub.output.contains("3 passed"))
        #expect(env.qemuProcesses().isEmpty)
    }
}
