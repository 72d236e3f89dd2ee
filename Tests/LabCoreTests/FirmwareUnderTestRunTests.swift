import Foundation
import LabCore
import Platform
import QMP
import Testing

/// Issue 22, item 1, in runs: before_all/after_all around the run, device
/// hooks, labels in the hooks' environment, and a guest that sees the
/// disks' target shape (the test guest under TCG, images/build.sh).
@Suite("Firmware under test: runs", .serialized)
struct FirmwareUnderTestRunTests {
    /// A lab whose guest is never booted (its kernel does not exist): for what happens before any boot.
    static func unbootedLab(_ env: QLabTestEnvironment, hooks: String) throws -> String {
        // Files that exist (a lab whose files are missing is refused before the run starts),
        // though nothing boots them: before_all fails or the run is cancelled first.
        for name in ["vmlinuz", "initrd"] {
            #expect(FileManager.default.createFile(atPath: env.labDirectory + "/" + name, contents: Data()))
        }
        return try env.writeLab("flash", """
            name: flash
            labels: {firmware: "20.0", build: abc}
            guests:
              g: {os: linux, kernel: vmlinuz, initrd: initrd}
            tests:
              inquiry: {run: "true"}
              read: {run: "true"}
            hooks:
            \(hooks)
            """)
    }

    static func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    /// A failed before_all: every entry is an `error` with the hook's message, nothing boots, after_all still runs.
    @Test func beforeAllFailureMakesEveryEntryAnError() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let log = env.root + "/hooks.log"
        let file = try Self.unbootedLab(env, hooks: """
              before_all: echo "flashing $QLAB_LABEL_FIRMWARE failed" >&2; exit 3
              after_all: echo "$QLAB_HOOK $QLAB_RESULT $QLAB_LABEL_FIRMWARE $QLAB_LABEL_BUILD $QLAB_RUN_TOTAL" >> \(log)
            """)
        var options = TestRunner.Options()
        options.labels = [RunLabel(key: "firmware", value: "21.12.1")]
        let report = try await TestRunner(controller: env.controller, labFile: file, options: options).run()
        #expect(report.results.map(\.outcome) == [.error, .error])
        for result in report.results {
            #expect(result.message.hasPrefix("not run: before_all hook failed"), "\(result.message)")
            #expect(result.message.contains("flashing 21.12.1 failed"), "\(result.message)")
        }
        #expect(report.boots.isEmpty)
        #expect(report.runHooks.map(\.hook) == ["before_all", "after_all"])
        #expect(report.runHooks.map(\.outcome) == [.error, .passed])
        #expect(report.labels.map { "\($0.key)=\($0.value)" } == ["firmware=21.12.1", "build=abc"])
        #expect(Self.read(log) == "after_all failed 21.12.1 abc 2\n")
        #expect(env.qemuProcesses().isEmpty)
    }

    /// `qlab run --label`: a bad one is a usage error naming it; good ones reach
    /// the hook, the JSON, JUnit and HTML reports, with the before_all failure.
    @Test func labelsAndBeforeAllThroughTheCommandLine() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try Self.unbootedLab(env, hooks: "  before_all: echo \"cannot flash $QLAB_LABEL_FIRMWARE\" >&2; exit 4")
        let bad = try env.qlab("run", file, "--label", "Firmware=1")
        #expect(bad.status == 2, "\(bad.output)")
        #expect(bad.stderr.contains("--label 'Firmware=1': a key is lower-case letters"), "\(bad.stderr)")
        let (json, junit, html) = (env.root + "/r.json", env.root + "/junit.xml", env.root + "/r.html")
        let run = try env.qlab("run", file, "--label", "firmware=21.12.1", "--label", "night=7", "--json-report", json, "--junit", junit, "--html", html)
        // Every entry an error and no test failed: infrastructure (exit 5).
        #expect(run.status == 5, "\(run.output)")
        #expect(run.output.contains("before_all hook failed"), "\(run.output)")
        #expect(run.stdout.contains("2 errors"), "\(run.stdout)")
        let report = try TestReport(path: json)
        #expect(report.labels.map { "\($0.key)=\($0.value)" } == ["firmware=21.12.1", "build=abc", "night=7"])
        #expect(report.results.allSatisfy { $0.outcome == .error && $0.message.contains("cannot flash 21.12.1") })
        let xml = try String(contentsOfFile: junit, encoding: .utf8)
        #expect(xml.contains(#"<property name="label.firmware" value="21.12.1"/>"#), "\(xml)")
        #expect(xml.contains(#"<property name="hook.before_all" value="error: before_all hook failed"#), "\(xml)")
        let page = try String(contentsOfFile: html, encoding: .utf8)
        #expect(page.contains(#"<code class="label">firmware=21.12.1</code>"#))
        #expect(env.qemuProcesses().isEmpty)
    }

    /// A run cancelled during before_all: its entries are cancelled and after_all still runs, told so.
    @Test func afterAllRunsWhenTheRunIsCancelled() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let log = env.root + "/hooks.log"
        let marker = env.root + "/flashing"
        let file = try Self.unbootedLab(env, hooks: """
              before_all: touch \(marker); sleep 60
              after_all: echo "$QLAB_HOOK $QLAB_RESULT" >> \(log)
            """)
        let stop = StopRequest()
        var options = TestRunner.Options()
        options.stop = stop
        let runner = try TestRunner(controller: env.controller, labFile: file, options: options)
        let requester = Task.detached {
            // The stop request once the hook is running (a deadline, not a sleep, orders the two).
            let deadline = ContinuousClock.now + .seconds(30)
            while !FileManager.default.fileExists(atPath: marker), ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(20))
            }
            stop.request(signal: SIGINT)
        }
        let began = ContinuousClock.now
        let report = try await stop.cancelling { try await runner.run() }
        await requester.value
        #expect(ContinuousClock.now - began < .seconds(50), "the before_all hook was not stopped")
        #expect(report.results.map(\.outcome) == [.cancelled, .cancelled])
        #expect(report.runHooks.map(\.outcome) == [.cancelled, .passed])
        #expect(Self.read(log) == "after_all cancelled\n")
    }

    /// A host SCSI device reaches QEMU as scsi-generic on a host_device node:
    /// QEMU takes the options and asks the device for its SG_IO version, which
    /// /dev/null (the only safe stand-in on a machine without a host SCSI device) does not have.
    @Test func hostSCSIDeviceReachesQEMU() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let file = try env.writeGuestLab("hostsg", devices: """
              target:
                emulated: {driver: lsi53c895a, disks: [{host: /dev/null, scsi_id: 4}]}
            """, tests: "  t: {run: \"true\"}")
        let up = try env.qlab("up", file)
        #expect(up.status != 0)
        #expect(up.output.contains("scsi-generic,id=target-disk0,drive=target-disk0-file,bus=target.0,scsi-id=4") || up.output.contains("SG_IO"), "\(up.output)")
        #expect(up.output.contains("cannot get SG_IO version number"), "\(up.output)")
        #expect(env.qemuProcesses().isEmpty)
        let args = try env.qlab("args", file)
        #expect(args.stdout.contains("driver=host_device,node-name=target-disk0-file,filename=/dev/null"), "\(args.output)")
    }

    /// The guest sees each disk's shape: vendor, product, revision, serial,
    /// block size, SCSI id and LUN, and a CD-ROM; the run's hooks run once
    /// under --jobs 2, device hooks per entry, labels in their environment.
    @Test func guestSeesTheTargetShape() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let out = QLabTestEnvironment.imagesOut
        let log = env.root + "/hooks.log"
        let file = try env.writeGuestLab("shape", devices: """
              scsi-am:
                emulated:
                  driver: am53c974
                  disks:
                    - {image: \(out)/scsi-target.qcow2, scsi_id: 3, vendor: RaSCSI, product: FIRMWARE-DISK, revision: "2112", serial: SN42, block_size: 4096}
                    - {image: \(out)/scsi-target.qcow2, scsi_id: 3, lun: 2, block_size: 1024}
                    - {image: \(out)/scsi-target.qcow2, type: cdrom, scsi_id: 5, vendor: RaSCSI, product: CD-EMU, revision: "0100"}
                attach: hotplug
                hooks: {before_each: echo "device $QLAB_HOOK $QLAB_HOOK_DEVICE $QLAB_TEST $QLAB_LABEL_FIRMWARE" >> \(log)}
            """, tests: """
              shape:
                run: >-
                  qlab-scsi-scan -w 20 -n 2 >/dev/null; for d in /sys/bus/scsi/devices/*:*:*:*; do t=${d##*/};
                  echo "dev ${t#*:*:} type=$(cat $d/type) vendor=$(cat $d/vendor) model=$(cat $d/model) rev=$(cat $d/rev) serial=$(tr -cd A-Za-z0-9 < $d/vpd_pg80 2>/dev/null)"; done;
                  for b in /sys/class/scsi_disk/*:*:*:*; do s=${b##*/}; for k in $b/device/block/*; do echo "block ${s#*:*:} $(cat /sys/block/${k##*/}/queue/logical_block_size)"; done; done
                timeout: 60s
              plain: {run: "true"}
            """, extra: """
            labels: {firmware: "20.0"}
            hooks:
              before_all: echo "$QLAB_HOOK $QLAB_LABEL_FIRMWARE $QLAB_GUESTS" >> \(log)
              after_all: echo "$QLAB_HOOK $QLAB_RESULT" >> \(log)
            """)
        var options = TestRunner.Options()
        options.jobs = 2
        options.labels = [RunLabel(key: "firmware", value: "21.12.1")]
        let report = try await TestRunner(controller: env.controller, labFile: file, options: options).run()
        #expect(report.results.map(\.outcome) == [.passed, .passed], "\(report.results.map(\.message))")
        let output = try #require(report.results.first { $0.entry.test == "shape" }).output
        let lines = output.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        func line(_ prefix: String) -> String { lines.first { $0.hasPrefix(prefix + " ") } ?? "" }
        #expect(line("dev 3:0") == "dev 3:0 type=0 vendor=RaSCSI model=FIRMWARE-DISK rev=2112 serial=SN42", "\(output)")
        #expect(line("dev 3:2").hasPrefix("dev 3:2 type=0 vendor=QEMU model=QEMU HARDDISK"), "\(output)")
        #expect(line("dev 5:0").hasPrefix("dev 5:0 type=5 vendor=RaSCSI model=CD-EMU rev=0100"), "\(output)")
        #expect(line("block 3:0") == "block 3:0 4096", "\(output)")
        #expect(line("block 3:2") == "block 3:2 1024", "\(output)")
        // before_all and after_all once for the run (two workers), the device's hook once per entry.
        let logLines = Self.read(log).split(separator: "\n").map(String.init)
        #expect(logLines.first == "before_all 21.12.1 linux" && logLines.last == "after_all passed", "\(logLines)")
        #expect(logLines.filter { $0.hasPrefix("before_all") }.count == 1 && logLines.filter { $0.hasPrefix("after_all") }.count == 1, "\(logLines)")
        #expect(logLines.filter { $0.hasPrefix("device ") }.sorted() == ["device before_each scsi-am plain 21.12.1", "device before_each scsi-am shape 21.12.1"], "\(logLines)")
        #expect(Set(report.results.compactMap(\.worker)).count == 2, "both workers ran an entry")
        #expect(report.results.allSatisfy { $0.steps.contains { $0.name == "before_each scsi-am" } })
        #expect(env.qemuProcesses().isEmpty)
    }
}
