import QMP

extension NestedScenario {
    /// Where the scenario links L1's scsi_debug SCSI generic node (labs/nested/hostscsi.yaml names it).
    static let scsiDebugLink = "/dev/qlab-scsi-debug"
    /// What L1 writes into the scsi_debug disk's sector 0 before L2 reads it.
    static let scsiDebugL1Text = "QLAB-SCSI-DEBUG-L1"
    /// What L2 writes into its sector 1 for L1 to read back.
    static let scsiDebugL2Text = "QLAB-SCSI-DEBUG-L2"

    /// A host SCSI device on an emulated controller (issue 22): L1's kernel
    /// emulates the target (scsi_debug), qlab in L1 gives its /dev/sgN to an L2
    /// guest's lsi53c895a (`host:` → scsi-generic), and L2 reads and writes it.
    static let hostSCSI = NestedScenario(
        id: "host-scsi", title: "qlab run in L1: L1's scsi_debug target on L2's emulated controller (host: /dev/sgN)",
        proves: "L1 adds a scsi_debug host (its kernel's emulated SCSI disk), links its /dev/sgN as /dev/qlab-scsi-debug and writes a text into its sector 0; `qlab run labs/nested/hostscsi.yaml` in L1 boots the Linux test guest in L2 with an lsi53c895a whose disk is `host: /dev/qlab-scsi-debug` (QEMU's scsi-generic): L2's kernel reports the device's own INQUIRY data (vendor Linux, product scsi_debug), reads L1's text from sector 0 and writes its own into sector 1, which L1 then reads from its scsi_debug disk. Runs only when named: L2's Linux boot takes minutes under TCG inside TCG.",
        boot: "bench", needsBoundGroup: false, onlyWhenNamed: true
    ) { context in
        let shell = context.shell
        let hosts = "/sys/bus/pseudo/drivers/scsi_debug/add_host"
        shell.atEnd("rm -f \(scsiDebugLink); echo -1 > \(hosts)")
        // One scsi_debug host; its device's SCSI generic and block nodes (devtmpfs makes them).
        // The host's scan and sd's attach are asynchronous: both nodes are waited for, 10 s at most.
        let add = try await shell.run(
            "echo 1 > \(hosts) && for i in $(seq 100); do m=$(grep -l scsi_debug /sys/bus/scsi/devices/*/model 2>/dev/null | head -n 1);"
                + " [ -n \"$m\" ] && [ -e ${m%/model}/block ] && [ -e ${m%/model}/scsi_generic ] && break; sleep 0.1; done;"
                + " for d in /sys/bus/scsi/devices/*; do [ -e $d/model ] && grep -q scsi_debug $d/model || continue;"
                + " echo \"scsi_debug ${d##*/} $(ls $d/scsi_generic) $(ls $d/block) [$(cat $d/vendor)] [$(cat $d/model)]\"; done; true")
        add.exits(0)
        let found = add.text.split(separator: "\n").filter { $0.hasPrefix("scsi_debug ") }.map { $0.split(separator: " ").map(String.init) }
        guard add.check("L1 has one scsi_debug device with a SCSI generic and a block node", found.count == 1 && found[0].count >= 4
                            && found[0][2].hasPrefix("sg") && found[0][3].hasPrefix("sd"), seen: add.text),
            let device = found.first
        else { return }
        let (sg, block) = (device[2], device[3])
        let prepare = try await shell.run(
            "ln -sf /dev/\(sg) \(scsiDebugLink) && printf \(scsiDebugL1Text) | dd of=/dev/\(block) bs=512 count=1 conv=notrunc,fsync 2>/dev/null && ls -lL \(scsiDebugLink)")
        prepare.exits(0)
        prepare.check("\(scsiDebugLink) is a character device (/dev/\(sg))", prepare.text.hasPrefix("c"), seen: prepare.text)

        let (junit, report, json) = try await runAndKeepInnerReports(context, lab: "hostscsi", id: "nested-hostscsi", repeat: 1) { run in
            run.exits(0)
            run.prints("1 passed")
        }
        junit?.check("the JUnit file counts 1 test, none failed", junit?.text.contains("tests=\"1\" failures=\"0\" errors=\"0\"") == true, seen: excerpt(junit?.text ?? ""))
        guard let report, let json else { return }
        let results = report["results"]?.arrayValue ?? []
        json.check("the report has 1 entry, passed", results.count == 1 && results[0]["outcome"]?.stringValue == "passed",
                   seen: results.map { "\($0["outcome"]?.stringValue ?? "?"): \($0["message"]?.stringValue ?? "")" }.joined(separator: "\n"))
        let lines = (results.first?["output"]?.stringValue ?? "").split(separator: "\n").map(String.init)
        let inquiry = lines.filter { $0.hasPrefix("inquiry ") }
        json.check("L2 sees one SCSI device, with scsi_debug's INQUIRY data (vendor Linux, product scsi_debug)",
                   inquiry.count == 1 && inquiry[0].split(separator: " ").dropFirst().prefix(2) == ["Linux", "scsi_debug"], seen: lines.joined(separator: "\n"))
        json.check("L2 read L1's text from the device's sector 0", lines.contains { $0.hasPrefix("sector0 ") && $0.hasSuffix(" " + scsiDebugL1Text) },
                   seen: lines.joined(separator: "\n"))
        if let boot = report["boots"]?.arrayValue?.first?["seconds"]?.doubleValue {
            json.check("L2 booted to ready in \(Int(boot.rounded())) s", report["boots"]?.arrayValue?.first?["ready"]?.boolValue == true)
        }
        // What L2 wrote, read by L1 from its own scsi_debug disk (past L1's page cache).
        let back = try await shell.run("dd if=/dev/\(block) bs=512 skip=1 count=1 iflag=direct 2>/dev/null | head -c 18; echo")
        back.exits(0)
        back.check("L1 reads L2's text from sector 1", back.text.hasPrefix(scsiDebugL2Text), seen: back.text)
    }
}
