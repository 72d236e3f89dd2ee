/// QEMU ending itself: a failed `assert()` (abort, SIGABRT), with a specific
/// entry for the DC-390 EEPROM that QEMU never unregisters (``SecondDC390Plug``).
extension DiagnosisCatalog {
    static let qemuCrashRules: [DiagnosisRule] = [
        DiagnosisRule(
            id: "dc390-eeprom-replug", keywords: ["se->compat"],
            patterns: [#"vmstate_register_with_alias_id: Assertion .!se->compat \|\| se->instance_id == 0. failed"#,
                       #"Assertion .!se->compat \|\| se->instance_id == 0. failed"#],
            takesDeviceFromLine: false,
            explain: { _ in
                (
                    summary: "QEMU aborted registering a device's migration state a second time: a dc390 hotplugged again into the same QEMU",
                    cause: "The DC-390's EEPROM registers its migration section (PCI-PATH/eeprom) when the card is realized and nothing unregisters it when the card is unplugged; the next dc390 at the same PCI address registers the same section and QEMU's assertion in vmstate_register_with_alias_id fails (SIGABRT). QEMU 7.2 and 10.0 both do this. In qlab: a second `qlab hotplug` after an unplug, a `snapshot save` (it unplugs and re-plugs the card), or a loop that plugs it again into the same QEMU (revert: loadvm, strategy: reset).",
                    fix: "Plug a dc390 only once per QEMU process: use revert: fast (a fresh QEMU for every revert), attach: boot, or the am53c974 driver (the same chip without the EEPROM); after an unplug, `qlab down` and `up` before plugging it again."
                )
            }),
        DiagnosisRule(
            id: "dc390-eeprom-section", keywords: ["unknown savevm section"],
            patterns: [#"Unknown savevm section(?: or instance)? '(?<section>[^']*/eeprom)'"#],
            takesDeviceFromLine: false,
            explain: { c in
                (
                    summary: "The snapshot holds the state of a DC-390 EEPROM (\(c["section"] ?? "PCI-PATH/eeprom")) that this QEMU does not have",
                    cause: "A dc390 was plugged and unplugged in the QEMU that saved the snapshot: its EEPROM's migration section stays registered after the unplug and went into the snapshot. Only that QEMU process has the section, so a fresh QEMU (a fast revert, or after `down`/`up`) refuses the load.",
                    fix: "Save the snapshot in a QEMU where no dc390 was unplugged (after `qlab down`/`up`, before plugging it, or with the card attached at boot); snapshots saved that way load anywhere. The am53c974 driver (the same chip without the EEPROM) has no such section."
                )
            }),
        DiagnosisRule(
            id: "qemu-assertion", keywords: ["assertion"],
            patterns: [#"(?:(?<file>[^\s:]+\.[ch]):(?<line>\d+): (?<function>\w+): )?Assertion [`'](?<assertion>.+)' failed"#],
            takesDeviceFromLine: false,
            explain: { c in
                let place = c["function"].map { " in \($0)" + (c["file"].map { " (\($0):\(c["line"] ?? "?"))" } ?? "") } ?? ""
                return (
                    summary: "QEMU aborted: an internal assertion failed\(place)\(c["assertion"].map { ": \($0)" } ?? "")",
                    cause: "QEMU checked a condition it relies on and found it false, so it called abort() (SIGABRT): a QEMU bug reached by what the lab or a command did (a device, a hotplug sequence, a snapshot).",
                    fix: "Note what ran last (`qlab status`, the lab's event log) and repeat it to confirm; avoid that sequence or device, or try another QEMU version (QLAB_QEMU or the lab's `qemu:`), and report it to QEMU with this line."
                )
            }),
        DiagnosisRule(
            id: "qemu-aborted", keywords: ["aborted", "signal 6", "sigabrt"],
            patterns: [#"^\s*Aborted(?: \(core dumped\))?\s*$"#, #"\d+ Aborted(?: \(core dumped\))?"#, #"killed by signal 6\b"#, #"\bSIGABRT\b"#],
            takesDeviceFromLine: false,
            explain: { _ in
                (
                    summary: "QEMU aborted (SIGABRT)",
                    cause: "QEMU called abort(): usually a failed internal assertion (its message is on QEMU's stderr just before, in the lab's qemu.log) or an error it cannot recover from.",
                    fix: "Read the last lines of QEMU's output (`qlab status LAB` shows the last exit; RUNTIME/LAB/qemu.log) for the assertion and run `qlab diagnose` on them; then avoid what triggered it or try another QEMU version."
                )
            }),
    ]

    /// Diagnoses another one makes redundant: the abort is explained by the assertion before it.
    static let subsumed: [String: Set<String>] = [
        "qemu-aborted": ["qemu-assertion", "dc390-eeprom-replug"],
    ]
}
