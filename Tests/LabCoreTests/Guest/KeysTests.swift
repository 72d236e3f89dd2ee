import Foundation
import LabCore
import Platform
import QMP
import Testing

/// Keys: `qlab keys` (QMP send-key), a test's `keys:` and `reset:`, and
/// `screen_expect` texts awaited together; on the real test guest under TCG,
/// where SeaBIOS (`-boot menu=on`) offers its boot menu on the VGA text screen.
@Suite("Keys and the screen (real QEMU)", .serialized)
struct KeysTests {
    // MARK: Keys as QEMU's key codes

    @Test func keyCombinationsBecomeQEMUKeyCodes() throws {
        #expect(try KeyCombo(parsing: "ctrl-a").qcodes == ["ctrl", "a"])
        #expect(try KeyCombo(parsing: "Ctrl-Alt-Delete").qcodes == ["ctrl", "alt", "delete"])
        #expect(try KeyCombo(parsing: "ctrl+alt+del").qcodes == ["ctrl", "alt", "delete"])
        #expect(try KeyCombo(parsing: "esc").qcodes == ["esc"])
        #expect(try KeyCombo(parsing: "F12").qcodes == ["f12"])
        #expect(try KeyCombo(parsing: "enter").qcodes == ["ret"])
        #expect(try KeyCombo(parsing: "shift-tab").qcodes == ["shift", "tab"])
        #expect(try KeyCombo(parsing: "ctrl--").qcodes == ["ctrl", "minus"])
        #expect(try KeyCombo(parsing: "/").qcodes == ["slash"])
        #expect(try KeyCombo.parseSequence(["down down", "ret"]).map(\.description) == ["down", "down", "ret"])

        func error(_ text: String) -> String {
            do {
                _ = try KeyCombo(parsing: text)
                return "no error"
            } catch {
                return error.description
            }
        }
        #expect(error("esq").hasPrefix("key 'esq': 'esq' is not a key qlab knows; did you mean 'esc'?"), "\(error("esq"))")
        #expect(error("a-ctrl") == "key 'a-ctrl': 'a' is not a modifier; only the last key of a combination may be other than ctrl, alt, shift, altgr, meta_l")
        #expect(error("ctrl-") .hasPrefix("key 'ctrl-': an empty part"), "\(error("ctrl-"))")
        #expect(error("ctrl-ctrl") == "key 'ctrl-ctrl': 'ctrl' twice")
        #expect(error("!").hasPrefix("key '!': '!' is not a key qlab knows"), "a shifted character is typed with --text, not named")
    }

    @Test func textIsTypedWithShiftWhereTheUSLayoutNeedsIt() throws {
        #expect(try TypedText.combos(for: "aZ1!").map(\.qcodes) == [["a"], ["shift", "z"], ["1"], ["shift", "1"]])
        #expect(try TypedText.combos(for: "~|\"<>?_+{} \n\t").map(\.description) == [
            "shift-grave_accent", "shift-backslash", "shift-apostrophe", "shift-comma", "shift-dot", "shift-slash",
            "shift-minus", "shift-equal", "shift-bracket_left", "shift-bracket_right", "spc", "ret", "tab",
        ])
        do {
            _ = try TypedText.combos(for: "caf\u{E9}")
            Issue.record("é was typed")
        } catch {
            #expect(error.description.hasPrefix("cannot type 'é' (U+00E9) at character 4: qlab types what a US-layout keyboard types"), "\(error)")
        }
    }

    // MARK: keys: in the lab file

    @Test func keysInTheLabFileAreCheckedAtTheirPlace() throws {
        let dir = try LabTempDirectory()
        defer { dir.remove() }
        let head = """
            name: k
            display: vga
            guests:
              linux: {os: linux, kernel: vmlinuz}
            tests:

            """
        let lab = try LabFixtures.load(head + """
              menu:
                reset: true
                keys: [{press: f12, until: "Select boot device"}, {wait: "1. "}, "down ret", {text: "Root!"}]
                screen_expect: [a, b]
            """, in: dir)
        let test = try #require(lab.test(named: "menu"))
        #expect(test.reset)
        #expect(test.run.isEmpty)
        #expect(test.keys == [
            .pressUntil([KeyCombo(qcodes: ["f12"])], until: "Select boot device"), .wait("1. "),
            .press([KeyCombo(qcodes: ["down"]), KeyCombo(qcodes: ["ret"])]), .type("Root!"),
        ])

        let unknown = try #require(try LabFixtures.loadError(head + "  t: {keys: [esc, ctlr-a]}\n"))
        #expect((unknown.line, unknown.column, unknown.keyPath) == (6, 19, "tests.t.keys[1]"), "\(unknown)")
        #expect(unknown.message == "key 'ctlr-a': 'ctlr' is not a key qlab knows; did you mean 'ctrl'?" + KeysTests.knownKeys, "\(unknown)")
        let untypable = try #require(try LabFixtures.loadError(head + "  t: {keys: [{text: \"naïve\"}]}\n"))
        #expect(untypable.keyPath == "tests.t.keys[0].text")
        #expect(untypable.message.hasPrefix("cannot type 'ï' (U+00EF) at character 3"), "\(untypable)")
        let shape = try #require(try LabFixtures.loadError(head + "  t: {keys: [{press: esc}]}\n"))
        #expect(shape.message == "a keys: step is one of {text: STRING}, {wait: TEXT} or {press: KEYS, until: TEXT}; found press", "\(shape)")
        let bootKeys = try LabFixtures.load("name: b\ndisplay: vga\nguests:\n  g: {os: linux, kernel: vmlinuz, boot_keys: [ctrl-a, {wait: SCSISelect}]}\n", in: dir)
        #expect(bootKeys.guests.first?.bootKeys == [.press([KeyCombo(qcodes: ["ctrl", "a"])]), .wait("SCSISelect")])
        let bootKeyTypo = try #require(try LabFixtures.loadError("name: b\ndisplay: vga\nguests:\n  g: {os: linux, kernel: vmlinuz, boot_keys: [ctlr-a]}\n"))
        #expect(bootKeyTypo.keyPath == "guests.g.boot_keys[0]", "\(bootKeyTypo)")
        let blind = try #require(try LabFixtures.loadError("name: b\nguests:\n  g: {os: linux, kernel: vmlinuz, boot_keys: esc}\n"))
        #expect(blind.keyPath == "guests.g.boot_keys", "\(blind)")
        #expect(blind.message.contains("has no display"), "\(blind)")
        let resetWithRun = try #require(try LabFixtures.loadError(head + "  t: {run: \"true\", reset: true}\n"))
        #expect(resetWithRun.keyPath == "tests.t.reset")
        #expect(resetWithRun.message.hasPrefix("reset: restarts the guest's firmware"), "\(resetWithRun)")
    }

    static let knownKeys = "; keys: QEMU's key names (esc, ret, tab, spc, backspace, delete, up, f1-f12, a-z, 0-9, ctrl, alt, shift, meta_l, ...) and aliases (enter, escape, space, del, pageup, win)"

    /// A key or character that cannot be pressed is bad input before qlab looks for the lab.
    @Test func qlabKeysRefusesWhatItCannotPressBeforeConnecting() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let bad = try env.qlab("keys", "nosuch", "ctrl-alt-dlete")
        #expect(bad.status == ExitStatus.usage.rawValue, "\(bad.output)")
        #expect(bad.stderr.contains("key 'ctrl-alt-dlete': 'dlete' is not a key qlab knows; did you mean 'delete'?"), "\(bad.stderr)")
        let text = try env.qlab("keys", "nosuch", "--text", "\u{00A7}1")
        #expect(text.status == ExitStatus.usage.rawValue, "\(text.output)")
        #expect(text.stderr.contains("--text: cannot type '\u{00A7}' (U+00A7) at character 1"), "\(text.stderr)")
        let none = try env.qlab("keys", "nosuch")
        #expect(none.status == ExitStatus.usage.rawValue, "\(none.output)")
        // Good keys for a lab that does not run: 3.
        let missing = try env.qlab("keys", "nosuch", "esc")
        #expect(missing.status == ExitStatus.noSuchLab.rawValue, "\(missing.output)")
    }

    // MARK: Real QEMU

    /// labs/seabios-boot-menu.yaml as it is: reset, Esc until the menu, "1", SeaBIOS boots on.
    @Test func theBootMenuLabWalksSeaBIOSMenuWithKeys() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let run = try env.qlab("run", QLabTestEnvironment.repositoryRoot + "/labs/seabios-boot-menu.yaml", "--json-report", env.root + "/r.json")
        #expect(run.status == 0, "\(run.output)")
        let report = try TestReport(path: env.root + "/r.json")
        let result = try #require(report.results.first { !$0.isBoot })
        #expect(result.outcome == .passed, "\(result.message)\n\(result.consoleTail)")
        #expect(result.steps.map(\.name).filter { ["reset", "keys", "screen"].contains($0) } == ["reset", "keys", "screen"])
        #expect(result.exitStatus == nil, "no command ran")
        #expect(env.qemuProcesses().isEmpty)
    }

    /// A guest's `boot_keys:` are pressed while its firmware runs, before
    /// `firmware_ready` is awaited: SeaBIOS's menu ("Select boot device") shows
    /// only when Esc is pressed during its prompt, so the same lab without the
    /// keys does not boot (that text never shows), and with them boots under
    /// `qlab run` and `qlab up --wait-ready` alike.
    @Test func bootKeysWalkTheFirmwareBeforeReady() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        func lab(_ name: String, bootKeys: String?, bootTimeout: Int) throws -> String {
            let written = try env.writeGuestLab(name, devices: "  {}", tests: #"  t: {run: "echo booted-after-the-menu", expect: booted-after-the-menu}"#,
                extra: "display: vga" + "\n" + #"qemu_args: ["-boot", "menu=on,splash-time=3000"]"#,
                guestExtra: (bootKeys.map { "    boot_keys: \($0)\n" } ?? "") + #"    firmware_ready: "Select boot device""#)
            let yaml = try String(contentsOfFile: written, encoding: .utf8).replacingOccurrences(of: "boot_timeout: 180s", with: "boot_timeout: \(bootTimeout)s")
            return try env.writeLab(name, yaml)
        }
        let keys = #"[{press: esc, until: "Select boot device"}, {wait: "1. "}, "1"]"#
        let without = try env.qlab("run", try lab("nokeys", bootKeys: nil, bootTimeout: 20), "--json-report", env.root + "/none.json")
        #expect(without.status == ExitStatus.infrastructure.rawValue, "\(without.output)")
        let failed = try TestReport(path: env.root + "/none.json")
        #expect(failed.results.first?.message == "guest linux did not boot: no firmware text \"Select boot device\" on the screen within 20 s (boot_timeout)",
                "\(failed.results.map(\.message))")

        let file = try lab("bootkeys", bootKeys: keys, bootTimeout: 180)
        let run = try env.qlab("run", file, "--json-report", env.root + "/keys.json")
        #expect(run.status == 0, "\(run.output)")
        let report = try TestReport(path: env.root + "/keys.json")
        #expect(report.results.map(\.outcome) == [.passed], "\(report.results.map { "\($0.entry.test): \($0.outcome) \($0.message)" })")

        let up = try env.qlab("up", file, "--wait-ready")
        #expect(up.status == 0, "\(up.output)")
        #expect(up.stdout.contains("guest linux ready after"), "\(up.output)")
        #expect(try env.qlab("down", "bootkeys").status == 0)
        #expect(env.qemuProcesses().isEmpty)
    }

    /// `qlab keys --text` reaches the guest's keyboard as typed: Linux's first
    /// virtual terminal reads the line back; and a screen that lacks texts is
    /// one failure naming them all, after one timeout, with no exit status.
    @Test func typedTextReachesTheGuestAndMissingScreenTextsFailTogether() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try env.writeGuestLab("keys", devices: "  {}", tests: """
              lacking: {screen_expect: [SeaBIOS, qlab-never-a, qlab-never-b], timeout: 3s}
              no-menu: {keys: [{press: esc, until: qlab-never-menu}], timeout: 2s}
            """, extra: "display: vga")
        let up = try env.qlab("up", lab)
        #expect(up.status == 0, "\(up.output)")
        // tty1 is opened for reading (the marker file says so) before anything is typed.
        let reader = try env.qlab("exec", "keys", "--ready", "--via", "console", "--timeout", "60", "--",
                                  "(exec 0</dev/tty1; touch /tmp/tty1-open; cat > /tmp/typed) & while [ ! -e /tmp/tty1-open ]; do sleep 0.1; done")
        #expect(reader.status == 0, "\(reader.output)")
        let typed = "Hello, World! ~|\"<>?_+{}[]:;'`=-/\\ END"
        let keys = try env.qlab("keys", "keys", "--text", typed, "ret")
        #expect(keys.status == 0, "\(keys.output)")
        let back = try env.qlab("exec", "keys", "--via", "console", "--timeout", "60", "--",
                                "while ! grep -q END /tmp/typed; do sleep 0.1; done; cat /tmp/typed")
        #expect(back.status == 0, "\(back.output)")
        #expect(back.stdout.split(separator: "\n").map { String($0).trimmingSpaces() }.contains(typed), "\(back.stdout)")
        #expect(try env.qlab("down", "keys").status == 0)

        let run = try env.qlab("run", lab, "--json-report", env.root + "/r.json")
        #expect(run.status == 1, "\(run.output)")
        let report = try TestReport(path: env.root + "/r.json")
        let lacking = try #require(report.results.first { $0.entry.test == "lacking" })
        #expect(lacking.outcome == .failed)
        #expect(lacking.message == "the screen did not show \"qlab-never-a\" or \"qlab-never-b\" within 3 s", "\(lacking.message)")
        #expect(lacking.exitStatus == nil, "a screen-only test ran no command")
        #expect(lacking.consoleTail.contains("--- screen ---\nSeaBIOS (version"), "\(lacking.consoleTail)")
        // One wait for all the texts (one problem naming both; each in turn would be two).
        #expect(lacking.steps.filter { $0.name == "screen" }.count == 1, "\(lacking.steps)")
        let noMenu = try #require(report.results.first { $0.entry.test == "no-menu" })
        #expect(noMenu.outcome == .failed)
        #expect(noMenu.message == "the screen did not show \"qlab-never-menu\" within 2 s", "\(noMenu.message)")
        #expect(env.qemuProcesses().isEmpty)
    }
}
