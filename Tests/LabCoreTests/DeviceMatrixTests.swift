import Foundation
import LabCore
import Testing

/// The device dimension (`matrix: {devices: ...}`): the lab file, selection and
/// reports without QEMU.
@Suite("Device dimension: lab file, selection, reports")
struct DeviceMatrixTests {
    static let devices = """
        devices:
          scsi-lsi: {emulated: {driver: lsi53c895a}, attach: hotplug}
          scsi-am: {emulated: {driver: am53c974}, attach: hotplug}
          scsi-mpt: {emulated: {driver: mptsas1068}, attach: hotplug}
        """

    static func lab(matrix: String = "matrix: {devices: each}") throws -> Lab {
        try Lab.parse(yaml: """
            name: dm
            \(matrix)
            \(devices)
            guests:
              a: {os: linux, kernel: /k, initrd: /i}
              g: {os: grub, kernel: /k}
            tests:
              t1: {run: "true"}
              t2: {run: "true", guests: [a]}
            """, file: "/tmp/dm.yaml")
    }

    @Test func eachAndAListInFileOrder() throws {
        #expect(try Self.lab().matrixDevices == ["scsi-lsi", "scsi-am", "scsi-mpt"])
        // A list runs in the devices' file order.
        #expect(try Self.lab(matrix: "matrix: {devices: [scsi-mpt, scsi-lsi]}").matrixDevices == ["scsi-lsi", "scsi-mpt"])
        #expect(try Self.lab(matrix: "").matrixDevices.isEmpty)
    }

    @Test func badMatrixNamesFileLineAndTheKnownDevices() throws {
        let yaml = "name: t\nmatrix:\n  devices: [scsi-lsi, scsi-lsx]\n" + Self.devices + "\nguests: {g: {os: linux, kernel: k}}\n"
        let error = try #require(try LabFixtures.loadError(yaml, file: "bad.yaml"))
        #expect(error.line == 3)
        #expect(error.file.hasSuffix("bad.yaml"))
        #expect(error.message.contains("no device 'scsi-lsx'"))
        #expect(error.message.contains("did you mean 'scsi-lsi'?"))
        #expect(error.message.contains("scsi-lsi, scsi-am, scsi-mpt"))
        let word = try #require(try LabFixtures.loadError("name: t\nmatrix: {devices: all}\n" + Self.devices + "\nguests: {g: {os: linux, kernel: k}}\n"))
        #expect(word.line == 2)
        #expect(word.message.contains("`each`"))
        let key = try #require(try LabFixtures.loadError("name: t\nmatrix: {device: each}\n" + Self.devices + "\nguests: {g: {os: linux, kernel: k}}\n"))
        #expect(key.message.contains("did you mean 'devices'?"))
        let none = try #require(try LabFixtures.loadError("name: t\nmatrix: {devices: each}\nguests: {g: {os: linux, kernel: k}}\n"))
        #expect(none.message.contains("the lab has no devices"))
        let twice = try #require(try LabFixtures.loadError("name: t\nmatrix: {devices: [scsi-am, scsi-am]}\n" + Self.devices + "\nguests: {g: {os: linux, kernel: k}}\n"))
        #expect(twice.message.contains("listed twice"))
    }

    @Test func matrixIsGuestByDeviceByTestByRepeat() throws {
        let matrix = try TestMatrix(lab: try Self.lab(matrix: "matrix: {devices: [scsi-lsi, scsi-am]}"), repeats: 2)
        #expect(matrix.entries.map { "\($0.guest)/\($0.device ?? "-")/\($0.test)#\($0.repeatIndex)" } == [
            "a/scsi-lsi/t1#1", "a/scsi-lsi/t1#2", "a/scsi-lsi/t2#1", "a/scsi-lsi/t2#2",
            "a/scsi-am/t1#1", "a/scsi-am/t1#2", "a/scsi-am/t2#1", "a/scsi-am/t2#2",
            "g/scsi-lsi/t1#1", "g/scsi-lsi/t1#2", "g/scsi-am/t1#1", "g/scsi-am/t1#2",
        ])
        #expect(matrix.entries.map(\.matrixIndex) == Array(0..<12))
        // Without a dimension: no device on any entry.
        #expect(try TestMatrix(lab: try Self.lab(matrix: "")).entries.allSatisfy { $0.device == nil })
    }

    @Test func deviceSelectsWithGuestAndTest() throws {
        let lab = try Self.lab()
        let one = try TestMatrix(lab: lab, guests: ["a"], tests: ["t2"], devices: ["scsi-am"])
        #expect(one.entries.map { "\($0.guest)/\($0.device ?? "-")/\($0.test)" } == ["a/scsi-am/t2"])
        let two = try TestMatrix(lab: lab, guests: ["g"], devices: ["scsi-mpt", "scsi-lsi"])
        #expect(two.entries.map { $0.device ?? "-" } == ["scsi-lsi", "scsi-mpt"])
        #expect(throws: TestMatrix.SelectionError.self) { try TestMatrix(lab: lab, devices: ["scsi-xx"]) }
        do {
            _ = try TestMatrix(lab: lab, devices: ["scsi-xx"])
        } catch {
            #expect("\(error)" == "no device 'scsi-xx' in the lab's matrix; its devices: scsi-lsi, scsi-am, scsi-mpt")
        }
        do {
            _ = try TestMatrix(lab: try Self.lab(matrix: ""), devices: ["scsi-am"])
            Issue.record("--device accepted for a lab without a device dimension")
        } catch {
            #expect("\(error)".contains("add `matrix: {devices: each}`"))
        }
    }

    @Test func whatEachEntryAttaches() throws {
        let lab = try Self.lab(matrix: "matrix: {devices: [scsi-lsi, scsi-am]}")
        let linux = try lab.selectGuest("a")
        let grub = try lab.selectGuest("g")
        // Linux takes hotplug: the entry's device is plugged, scsi-mpt (not in the matrix) always.
        #expect(lab.hotplugDevices(for: linux, device: "scsi-am") == ["scsi-am", "scsi-mpt"])
        #expect(lab.devicesLeftOut(for: linux, device: "scsi-am").isEmpty)
        #expect(!lab.bootsPerDevice(linux))
        // GRUB takes none: every device is attached at boot, the matrix's other ones left out.
        #expect(lab.devicesLeftOut(for: grub, device: "scsi-am") == ["scsi-lsi"])
        #expect(lab.bootsPerDevice(grub))
        #expect(try Self.lab(matrix: "").devicesLeftOut(for: grub, device: nil).isEmpty)
    }

    @Test func aBootPerDeviceLeavesTheOthersOffTheCommandLineAndRecord() throws {
        let lab = try Self.lab()
        let planner = LabPlanner(runtimeRoot: "/tmp/qlab-dm-none/run", stateRoot: "/tmp/qlab-dm-none/state", environment: ProcessInfo.processInfo.environment)
        let guest = try lab.selectGuest("g")
        let plan = try planner.plan(lab: lab, guest: "g", options: LabPlanner.Options(leftOutDevices: lab.devicesLeftOut(for: guest, device: "scsi-am")))
        let devices = plan.argv.enumerated().filter { $0.offset > 0 && plan.argv[$0.offset - 1] == "-device" }.map(\.element)
        #expect(devices.contains { $0.hasPrefix("am53c974,") })
        #expect(!devices.contains { $0.hasPrefix("lsi53c895a,") || $0.hasPrefix("mptsas1068,") })
        let states = Dictionary(uniqueKeysWithValues: plan.deviceStates.map { ($0.name, $0.state) })
        #expect(states == ["scsi-lsi": .detached, "scsi-am": .boot, "scsi-mpt": .detached])
        // Without the dimension all three are on it.
        let whole = try planner.plan(lab: try Self.lab(matrix: ""), guest: "g")
        #expect(whole.deviceStates.allSatisfy { $0.state == .boot })
    }

    @Test func reportsNameTheDevice() throws {
        let entries = try TestMatrix(lab: try Self.lab(matrix: "matrix: {devices: [scsi-lsi, scsi-am]}"), guests: ["g"]).entries
        let results = [
            TestResult(entry: entries[0], outcome: .passed, duration: 1, exitStatus: 0),
            TestResult(entry: entries[1], outcome: .failed, duration: 2, exitStatus: 1, message: "output lacks \"x\""),
        ]
        let report = TestReport(lab: "dm", startedAt: 10, duration: 5, shards: [], results: results)
        // JSON: `device` on each result, and back.
        let json = report.json
        let first = try #require(json["results"]?.arrayValue?.first)
        #expect(first["device"]?.stringValue == "scsi-lsi")
        let read = try #require(TestResult(first))
        #expect(read.entry.device == "scsi-lsi")
        // JUnit: the class name and a property.
        let xml = JUnitReport.xml(report)
        #expect(xml.contains(#"<testcase classname="dm.g.scsi-am" name="t1""#))
        #expect(xml.contains(#"<property name="device" value="scsi-lsi"/>"#))
        // HTML: a matrix row per guest and device.
        let html = HTMLReport.html([report])
        #expect(html.contains("guest · device \\ test"))
        #expect(html.contains(#"<tr data-guest="g" data-device="scsi-am""#) && html.contains(#"><th scope="row">g · scsi-am</th>"#))
        #expect(html.contains(#"data-guest="g" data-device="scsi-lsi" data-test="t1""#))
        // A lab without the dimension: no device anywhere.
        let plain = TestReport(lab: "dm", startedAt: 10, duration: 5, shards: [], results: [
            TestResult(entry: TestRunEntry(guest: "g", test: "t1", repeatIndex: 1, matrixIndex: 0), outcome: .passed, duration: 1),
        ])
        #expect(plain.json["results"]?.arrayValue?.first?["device"] == nil)
        #expect(!JUnitReport.xml(plain).contains("device"))
        #expect(!HTMLReport.html([plain]).contains("data-device"))
    }
}
