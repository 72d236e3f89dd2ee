import Foundation
import LabCore
import Platform
import QMP
import Testing

/// Issue 22, item 1: a disk's target shape, host SCSI devices, run labels and
/// run hooks in the lab file; their reports. No QEMU here (FirmwareUnderTestQEMUTests has it).
@Suite("Firmware under test: lab file, labels, run hooks")
struct FirmwareUnderTestTests {
    static let guests = """
        guests:
          g: {os: linux, kernel: /k, initrd: /i}
        """

    static func lab(_ devices: String, extra: String = "") throws -> Lab {
        try Lab.parse(yaml: "name: shape\ndevices:\n" + devices + "\n" + guests + "\n" + extra, file: "/tmp/shape.yaml")
    }

    static func refusal(_ devices: String, extra: String = "") -> LabFileError? {
        do {
            _ = try lab(devices, extra: extra)
            return nil
        } catch let error as LabFileError {
            return error
        } catch {
            return LabFileError(file: "", message: "\(error)")
        }
    }

    /// The `-device` option of disk `id` in the device's attachment.
    static func diskOption(_ lab: Lab, device: String, disk id: String) throws -> String {
        let attachment = try lab.attachment(of: device, for: lab.guests[0], diskOverlays: [id: "/tmp/o.qcow2"])
        return try #require(attachment.devices.first { $0.id == id }).optionValue
    }

    @Test func diskShapeBecomesQEMUProperties() throws {
        let lab = try Self.lab("""
              c:
                emulated:
                  driver: am53c974
                  disks:
                    - {image: /d.qcow2, scsi_id: 3, lun: 2, vendor: RaSCSI, product: "FIRMWARE, DISK", revision: "2112", serial: SN42, block_size: 4096}
                    - {image: /d.qcow2}
                    - {image: /cd.iso, format: raw, type: cdrom, scsi_id: 0, vendor: RaSCSI}
            """)
        #expect(try Self.diskOption(lab, device: "c", disk: "c-disk0")
            == "scsi-hd,id=c-disk0,drive=c-disk0-fmt,bus=c.0,scsi-id=3,lun=2,vendor=RaSCSI,product=FIRMWARE,, DISK,ver=2112,serial=SN42,logical_block_size=4096,physical_block_size=4096")
        // Named ids on the bus: the disk without one gets the lowest free (0 is the CD-ROM's), as QEMU could not know in time.
        #expect(try Self.diskOption(lab, device: "c", disk: "c-disk1") == "scsi-hd,id=c-disk1,drive=c-disk1-fmt,bus=c.0,scsi-id=1")
        #expect(try Self.diskOption(lab, device: "c", disk: "c-disk2") == "scsi-cd,id=c-disk2,drive=c-disk2-fmt,bus=c.0,scsi-id=0,vendor=RaSCSI")
        // A CD-ROM is read-only: no overlay, its image opened read-only even when one is offered.
        let attachment = try lab.attachment(of: "c", for: lab.guests[0], diskOverlays: ["c-disk2": "/tmp/cd.qcow2"])
        let cdNodes = attachment.blockdevs.filter { $0.nodeName.hasPrefix("c-disk2") }.map(\.optionValue)
        #expect(cdNodes == ["driver=file,node-name=c-disk2-file,filename=/cd.iso,read-only=on", "driver=raw,node-name=c-disk2-fmt,file=c-disk2-file,read-only=on"])
        #expect(lab.devices[0].emulated?.disks.map(\.usesOverlay) == [true, true, false])
        // QMP's device_add gets the same properties, typed.
        let add = try #require(attachment.devices.first { $0.id == "c-disk0" }).deviceAddArguments
        #expect(add["scsi-id"] == JSONValue(3) && add["logical_block_size"] == JSONValue(4096) && add["product"] == .string("FIRMWARE, DISK"))
        // Without any named id nothing changes: QEMU places the disks as before.
        let plain = try Self.lab("  c: {emulated: {driver: lsi53c895a, disks: [/d.qcow2, /d.qcow2]}}")
        #expect(try Self.diskOption(plain, device: "c", disk: "c-disk1") == "scsi-hd,id=c-disk1,drive=c-disk1-fmt,bus=c.0")
    }

    @Test(arguments: [
        ("{image: /d.qcow2, vendor: ABCDEFGHI}", "vendor: 'ABCDEFGHI' has 9 characters; INQUIRY holds at most 8", "disks[0].vendor"),
        ("{image: /d.qcow2, product: ABCDEFGHIJKLMNOPQ}", "at most 16", "disks[0].product"),
        ("{image: /d.qcow2, revision: \"12345\"}", "at most 4", "disks[0].revision"),
        ("{image: /d.qcow2, vendor: \"Ünï\"}", "printable ASCII", "disks[0].vendor"),
        ("{image: /d.qcow2, block_size: 8192}", "block_size 8192 is not one qlab emulates; use 512, 1024, 2048 or 4096", "disks[0].block_size"),
        ("{image: /d.qcow2, scsi_id: 7}", "scsi_id 7 is not on lsi53c895a's bus (7 is the controller's own id on this narrow SCSI bus); use 0-6", "disks[0].scsi_id"),
        ("{image: /d.qcow2, lun: 1}", "lun 1 is not on lsi53c895a's bus: it takes only LUN 0", "disks[0].lun"),
        ("{image: /d.qcow2, type: tape}", "tape", "disks[0].type"),
        ("{image: /d.qcow2, type: cdrom, block_size: 4096}", "a CD-ROM's blocks are 2048 bytes", "disks[0].block_size"),
        ("{image: /d.qcow2, properties: {scsi-id: 3}}", "scsi_id", "disks[0].properties"),
        ("{image: /d.qcow2, host: /dev/null}", "either an image or a host SCSI device", "disks[0].host"),
        ("{host: /dev/null, vendor: X}", "`vendor:` does not apply to a host SCSI device", "disks[0].vendor"),
        ("{host: dev/sg3}", "not an absolute path", "disks[0].host"),
        ("{host: /tmp}", "/tmp is a directory, not a host SCSI device", "disks[0].host"),
    ])
    func diskShapeRefusals(disk: String, message: String, path: String) throws {
        let error = try #require(Self.refusal("  c: {emulated: {driver: lsi53c895a, disks: [\(disk)]}}"), "\(disk) was accepted")
        #expect(error.message.contains(message), "\(error)")
        #expect(error.keyPath == "devices.c.emulated." + path, "\(error)")
        #expect(error.line == 3, "\(error)")
    }

    @Test func busLimitsFollowTheController() throws {
        // am53c974 takes LUNs 0-7; megasas ids up to 64; two disks at one id and LUN are refused.
        _ = try Self.lab("  c: {emulated: {driver: am53c974, disks: [{image: /d.qcow2, scsi_id: 6, lun: 7}]}}")
        _ = try Self.lab("  c: {emulated: {driver: megasas, disks: [{image: /d.qcow2, scsi_id: 64, lun: 255}]}}")
        let over = try #require(Self.refusal("  c: {emulated: {driver: megasas, disks: [{image: /d.qcow2, scsi_id: 65}]}}"))
        #expect(over.message.contains("use 0-64"), "\(over)")
        let twice = try #require(Self.refusal("  c: {emulated: {driver: am53c974, disks: [{image: /d.qcow2, scsi_id: 2}, {image: /d.qcow2, scsi_id: 2}]}}"))
        #expect(twice.message == "disk 0 is already at scsi_id 2, lun 0; give this disk another scsi_id or lun", "\(twice)")
        _ = try Self.lab("  c: {emulated: {driver: am53c974, disks: [{image: /d.qcow2, scsi_id: 2}, {image: /d.qcow2, scsi_id: 2, lun: 1}]}}")
    }

    @Test func hostSCSIDevice() throws {
        // A character device: scsi-generic on a host_device node, no overlay, no format node.
        let lab = try Self.lab("  c: {emulated: {driver: lsi53c895a, disks: [{host: /dev/null, scsi_id: 4}]}}")
        let disk = try #require(lab.devices[0].emulated?.disks.first)
        #expect(disk.qemuDriver == "scsi-generic" && !disk.usesOverlay && lab.missingFiles.filter { $0.guest == nil }.isEmpty)
        let attachment = try lab.attachment(of: "c", for: lab.guests[0], diskOverlays: ["c-disk0": "/tmp/o.qcow2"])
        #expect(attachment.blockdevs.map(\.optionValue) == ["driver=host_device,node-name=c-disk0-file,filename=/dev/null"])
        #expect(attachment.devices.last?.optionValue == "scsi-generic,id=c-disk0,drive=c-disk0-file,bus=c.0,scsi-id=4")
        // Its state is not in a snapshot (a boot-attached one makes the guest reset between runs), and it serves one guest.
        #expect(lab.effectiveStrategy(for: lab.guests[0]) == .reset)
        #expect(TestRunner.parallelObstacle(lab: lab, guests: [])?.contains("host SCSI device") == true)
        // A regular file is refused at once; a device that is not there is a missing file, refused at launch.
        let file = "/tmp/qlab-not-a-device-\(getpid())"
        #expect(FileManager.default.createFile(atPath: file, contents: Data()))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let regular = try #require(Self.refusal("  c: {emulated: {driver: lsi53c895a, disks: [{host: \(file)}]}}"))
        #expect(regular.message.contains("is a regular file, not a host SCSI device; give its SCSI generic node, /dev/sgN"), "\(regular)")
        let absent = try Self.lab("  c: {emulated: {driver: lsi53c895a, disks: [{host: /dev/qlab-no-sg9}]}}")
        // (The guest's /k and /i are missing files of the guest's own.)
        let deviceFiles = absent.missingFiles.filter { $0.guest == nil }
        #expect(deviceFiles.map(\.path) == ["/dev/qlab-no-sg9"])
        #expect(deviceFiles.first?.error.message.contains("/dev/qlab-no-sg9 does not exist on this host") == true)
        #expect(deviceFiles.first?.error.keyPath == "devices.c.emulated.disks[0].host")
    }

    @Test func labelsFromTheFileAndTheCommandLine() throws {
        let lab = try Self.lab("  c: {emulated: {driver: lsi53c895a}}", extra: "labels: {firmware: 21.12.1, build: abc, empty: }")
        #expect(lab.labels == [RunLabel(key: "firmware", value: "21.12.1"), RunLabel(key: "build", value: "abc"), RunLabel(key: "empty", value: "")])
        let command = [RunLabel(key: "build", value: "def"), RunLabel(key: "bench", value: "a=b")]
        #expect(RunLabel.merged(file: lab.labels, command: command).map { "\($0.key)=\($0.value)" } == ["firmware=21.12.1", "build=def", "empty=", "bench=a=b"])
        #expect(RunLabel.environment(command) == ["QLAB_LABEL_BUILD": "def", "QLAB_LABEL_BENCH": "a=b"])
        let bad = try #require(Self.refusal("  c: {emulated: {driver: lsi53c895a}}", extra: "labels: {Firmware: 1}"))
        #expect(bad.keyPath == "labels.Firmware" && bad.message.contains("lower-case letters, digits and _"), "\(bad)")
        let multiline = try #require(Self.refusal("  c: {emulated: {driver: lsi53c895a}}", extra: "labels: {firmware: \"a\\nb\"}"))
        #expect(multiline.message.contains("one line of text"), "\(multiline)")
        if case .failure(let error) = RunLabel.parse("firmware") { #expect(error.description.contains("write KEY=VALUE")) } else { Issue.record("accepted") }
        if case .failure(let error) = RunLabel.parse("build-id=1") { #expect(error.description.hasPrefix("--label 'build-id=1': ")) } else { Issue.record("accepted") }
        #expect((try? RunLabel.parse("firmware=").get()) == RunLabel(key: "firmware", value: ""))
    }

    @Test func hookKeys() throws {
        let lab = try Self.lab("""
              c:
                emulated: {driver: lsi53c895a}
                hooks: {before_each: ./flash-target.sh, timeout: 5s}
            """, extra: "hooks: {before_all: ./flash.sh, after_all: ./collect.sh, before_each: x}")
        #expect(lab.hooks.beforeAll == "./flash.sh" && lab.hooks.afterAll == "./collect.sh")
        #expect(lab.devices[0].hooks == DeviceHooks(beforeEach: "./flash-target.sh", timeout: .seconds(5)))
        let perDevice = try #require(Self.refusal("""
              c:
                emulated: {driver: lsi53c895a}
                hooks: {before_all: ./flash.sh}
            """))
        #expect(perDevice.keyPath == "devices.c.hooks.before_all" && perDevice.message.contains("put it in the lab's `hooks:`"), "\(perDevice)")
    }

    /// Labels and run hooks in JSON (and back), JUnit and HTML.
    @Test func labelsAndRunHooksInReports() throws {
        let entries = try TestMatrix(lab: try RunMatrixTests.lab()).entries
        var report = TestReport(lab: "m", startedAt: 10, duration: 5, shards: [], results: [TestResult(entry: entries[0], outcome: .passed, duration: 1)])
        #expect(report.allPassed)
        report.labels = [RunLabel(key: "firmware", value: "21.12.1"), RunLabel(key: "build", value: "<abc>")]
        report.runHooks = [RunHookResult(hook: "before_all", outcome: .passed, seconds: 1),
                           RunHookResult(hook: "after_all", outcome: .error, seconds: 2, message: "after_all hook failed (exit 3): no log")]
        #expect(!report.allPassed)
        #expect(report.summaryLine == "1 passed; after_all hook failed")
        let json = report.json
        #expect(json["labels"] == .object(["firmware": .string("21.12.1"), "build": .string("<abc>")]))
        #expect(json["run_hooks"]?.arrayValue?.map { $0["outcome"]?.stringValue } == ["passed", "error"])
        let path = "/tmp/qlab-labels-\(getpid()).json"
        try FileSystem.writeJSON(path, json)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let read = try TestReport(path: path)
        #expect(read.labels == report.labels && read.runHooks.map(\.message) == report.runHooks.map(\.message))
        let xml = JUnitReport.xml(report)
        #expect(xml.contains(#"<property name="label.firmware" value="21.12.1"/>"#))
        #expect(xml.contains(#"<property name="label.build" value="&lt;abc&gt;"/>"#))
        #expect(xml.contains(#"<property name="hook.after_all" value="error: after_all hook failed (exit 3): no log"/>"#))
        let html = HTMLReport.html([report])
        #expect(html.contains(#"<td data-fact="labels"><code class="label">firmware=21.12.1</code> <code class="label">build=&lt;abc&gt;</code></td>"#))
        #expect(html.contains(#"<br><code class="label">firmware=21.12.1</code><br><code class="label">build=&lt;abc&gt;</code></th>"#))
        #expect(html.contains(#"<td data-fact="hook_after_all">error: after_all hook failed (exit 3): no log</td>"#))
    }
}
