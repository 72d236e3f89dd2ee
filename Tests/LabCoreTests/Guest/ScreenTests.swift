import Foundation
import LabCore
import Platform
import QMP
import Testing

/// Screens: `display: vga`, `qlab screenshot` (QMP screendump), `qlab screen
/// --text` (the VGA text buffer through pmemsave), and screen text in runs,
/// on the real test guest under TCG, where SeaBIOS writes its banner and
/// "Booting from ROM..." on the VGA text screen.
@Suite("Guest screens (real QEMU)", .serialized)
struct ScreenTests {
    /// The PNG's width and height (IHDR), nil when it is not a PNG.
    static func pngSize(_ data: Data) -> (Int, Int)? {
        let bytes = [UInt8](data)
        guard bytes.count > 24, bytes.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else { return nil }
        func be32(_ at: Int) -> Int { bytes[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
        return (be32(16), be32(20))
    }

    static func mode(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? Int
    }

    @Test func seaBIOSTextAndScreenshotOfARunningLab() async throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try env.writeGuestLab("screen", devices: "  {}", tests: "  t: {run: \"true\"}", extra: "display: vga")
        let up = try env.qlab("up", lab)
        #expect(up.status == 0, "\(up.output)")

        let text = try env.qlab("screen", "screen", "--text", "--wait", "Booting from", "--timeout", "120")
        #expect(text.status == 0, "\(text.output)")
        #expect(text.stdout.contains("SeaBIOS (version"), "\(text.stdout)")
        #expect(text.stdout.contains("Booting from ROM"), "\(text.stdout)")

        let json = try env.qlab("screen", "screen", "--text", "--json")
        #expect(json.status == 0, "\(json.output)")
        let document = try JSONValue.parse(Array(json.stdout.utf8))
        #expect(document["text_mode"]?.boolValue == true)
        #expect(document["columns"]?.intValue == 80)
        #expect(document["rows"]?.intValue == 25)
        #expect(document["address"]?.intValue == 0xB8000)
        #expect(document["lines"]?.arrayValue?.count == 25)
        #expect(document["lines"]?[0]?.stringValue?.hasPrefix("SeaBIOS") == true)

        let png = env.root + "/screen.png"
        let shot = try env.qlab("screenshot", "screen", png)
        #expect(shot.status == 0, "\(shot.output)")
        let size = try #require(Self.pngSize(try Data(contentsOf: URL(fileURLWithPath: png))), "not a PNG")
        // Text mode 80x25 with the 9x16 VGA font.
        #expect(size == (720, 400))
        #expect(Self.mode(png) == 0o644)

        // A device is written to, never replaced: a full one (a private node like /dev/full,
        // mknod c 1 7, when root; else /dev/full itself, which this user cannot replace) says the write failed.
        let full = mknod(env.root + "/full", S_IFCHR | 0o666, dev_t(1 << 8 | 7)) == 0 ? env.root + "/full" : "/dev/full"
        let failed = try env.qlab("screenshot", "screen", full)
        #expect(failed.status == ExitStatus.failed.rawValue, "\(failed.output)")
        #expect(failed.stderr.contains("cannot write \(full): the write failed: write \(full) (a character device): No space left on device"), "\(failed.stderr)")
        #expect(!failed.stdout.contains("saved"))
        var info = stat()
        #expect(lstat(full, &info) == 0 && info.st_mode & S_IFMT == S_IFCHR, "\(full) is still a device")

        // A wait that runs out: 124, and the message says what was missing.
        let never = try env.qlab("screen", "screen", "--text", "--wait", "qlab-never-on-screen", "--timeout", "1")
        #expect(never.status == 124, "\(never.output)")
        #expect(never.stderr.contains("the screen did not show \"qlab-never-on-screen\" within 1 s"), "\(never.stderr)")

        // QEMU's files went to the private runtime directory and are gone.
        let runtimeFiles = try FileManager.default.contentsOfDirectory(atPath: env.runtime("screen").directory)
        #expect(!runtimeFiles.contains { $0.hasSuffix(".png") || $0.hasSuffix(".bda") || $0.hasSuffix(".txt") }, "\(runtimeFiles)")
        #expect(try env.qlab("down", "screen").status == 0)
    }

    @Test func displayKeysOnTheCommandLineAndInErrors() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        func lab(_ name: String, top: String = "", guest: String = "", os: String = "linux", tests: String = "  t: {run: \"true\"}") throws -> String {
            try env.writeLab(name, """
                name: \(name)
                machine: {type: q35, accel: tcg}
                \(top)
                guests:
                  g:
                    os: \(os)
                    kernel: /nonexistent/vmlinuz
                \(guest)
                tests:
                \(tests)
                """)
        }
        let vga = "-device VGA,id=qlab-vga,bus=pcie.0,addr=0x1e"
        // The example lab with a screen.
        let example = try env.qlab("args", QLabTestEnvironment.repositoryRoot + "/labs/emulated-firmware.yaml")
        #expect(example.status == 0, "\(example.output)")
        #expect(example.stdout.contains(vga))
        #expect(!(try env.qlab("args", try lab("plain"))).stdout.contains("VGA"))
        #expect(try env.qlab("args", try lab("top", top: "display: vga")).stdout.contains(vga))
        // Graphical profiles get one by default; a guest's display: none takes it away.
        #expect(try env.qlab("args", try lab("dos", os: "dos")).stdout.contains(vga))
        #expect(try env.qlab("args", try lab("win", os: "windows")).stdout.contains(vga))
        #expect(!(try env.qlab("args", try lab("dosnone", guest: "    display: none", os: "dos"))).stdout.contains("VGA"))
        #expect(!(try env.qlab("args", try lab("topoff", top: "display: vga", guest: "    display: none"))).stdout.contains("VGA"))

        let typo = try env.qlab("args", try lab("typo", top: "display: vgaa"))
        #expect(typo.status == 2)
        #expect(typo.stderr.contains("typo.yaml:3:10: display: 'vgaa' is not one of none|vga; did you mean 'vga'?"), "\(typo.stderr)")
        let noScreen = try env.qlab("args", try lab("noscreen", guest: "    firmware_ready: SeaBIOS"))
        #expect(noScreen.status == 2)
        #expect(noScreen.stderr.contains("noscreen.yaml:8:21: guests.g.firmware_ready: guest g has no display"), "\(noScreen.stderr)")
        // A test may only read the screen.
        let screenOnly = try env.qlab("args", try lab("screenonly", top: "display: vga", tests: "  banner: {screen_expect: SeaBIOS}"))
        #expect(screenOnly.status == 0, "\(screenOnly.output)")
        let neither = try env.qlab("args", try lab("neither", tests: "  banner: {timeout: 5s}"))
        #expect(neither.status == 2)
        #expect(neither.stderr.contains("screen_expect"), "\(neither.stderr)")
    }

    @Test func aLabWithoutADisplayIsToldHowToGetOne() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try env.writeGuestLab("nodisp", devices: "  {}", tests: "  t: {run: \"true\"}")
        #expect(try env.qlab("up", lab, "--paused").status == 0)
        let shot = try env.qlab("screenshot", "nodisp", env.root + "/x.png")
        #expect(shot.status == 2)
        #expect(shot.stderr.contains("has no display adapter: set `display: vga`"), "\(shot.stderr)")
        #expect(!FileManager.default.fileExists(atPath: env.root + "/x.png"))
        #expect(try env.qlab("screen", "nodisp", "--text").status == 2)
    }

    /// A run of a guest with a display: firmware_ready waits for SeaBIOS's text at boot; screen_expect
    /// passes on it; a failing test and a screen text that never comes each save a screenshot next to
    /// the reports, linked from the JSON, JUnit and HTML reports.
    @Test func failingRunsSaveTheScreenNextToTheReports() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try env.writeGuestLab("shots", devices: "  {}", tests: """
              banner: {screen_expect: [SeaBIOS, "Booting from"]}
              fail: {run: "exit 3"}
              missing: {screen_expect: qlab-never-on-screen, timeout: 2s}
            """, extra: "display: vga")
        // firmware_ready on the guest (the helper's guest block ends with rescan:).
        let text = try String(contentsOfFile: lab, encoding: .utf8)
            .replacingOccurrences(of: "    rescan:", with: "    firmware_ready: \"Booting from\"\n    rescan:")
        try text.write(toFile: lab, atomically: true, encoding: .utf8)
        let out = env.root + "/out"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let run = try env.qlab("run", lab, "--json-report", out + "/report.json", "--junit", out + "/junit.xml", "--html", out + "/report.html")
        #expect(run.status == 1, "\(run.output)")

        let report = FileSystem.readJSON(out + "/report.json") ?? JSONValue.null
        let results = try #require(report["results"]?.arrayValue)
        #expect(results.map { $0["outcome"]?.stringValue ?? "" } == ["passed", "failed", "failed"], "\(run.output)")
        #expect(results[0]["screenshot"] == .null)
        #expect(results[1]["screenshot"]?.stringValue == "shots-linux-fail-1.png")
        #expect(results[2]["screenshot"]?.stringValue == "shots-linux-missing-1.png")
        #expect(results[2]["message"]?.stringValue == "the screen did not show \"qlab-never-on-screen\" within 2 s")
        #expect(results[2]["console_tail"]?.stringValue?.contains("--- screen ---\nSeaBIOS (version") == true)
        for name in ["shots-linux-fail-1.png", "shots-linux-missing-1.png"] {
            let path = out + "/" + name
            #expect(Self.pngSize((try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data()) != nil, "\(path)")
            #expect(Self.mode(path) == 0o644)
            #expect(run.stdout.contains("note: screenshot of linux \(name.contains("fail") ? "fail" : "missing"): \(path)"), "\(run.stdout)")
        }
        let junit = try String(contentsOfFile: out + "/junit.xml", encoding: .utf8)
        #expect(junit.contains("[[ATTACHMENT|\(out)/shots-linux-fail-1.png]]"), "\(junit)")
        #expect(junit.contains("[[ATTACHMENT|\(out)/shots-linux-missing-1.png]]"))
        let html = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
        #expect(html.components(separatedBy: "src=\"data:image/png;base64,iVBORw0KGgo").count - 1 == 2)
        // The report read back (as `report html` and `report merge` do) finds its screenshots.
        let readBack = try TestReport(path: out + "/report.json")
        #expect(readBack.results[1].screenshot == out + "/shots-linux-fail-1.png")
        #expect(env.qemuProcesses().isEmpty)
    }

    /// firmware_ready text that never comes: the guest did not boot, with the reason and its screen.
    @Test func missingFirmwareTextIsAFailedBootWithItsScreen() throws {
        try RunLoopTests.requireImages()
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try env.writeGuestLab("nofw", devices: "  {}", tests: "  t: {run: \"true\"}", extra: "display: vga")
        let text = try String(contentsOfFile: lab, encoding: .utf8)
            .replacingOccurrences(of: "    boot_timeout: 180s", with: "    boot_timeout: 4s\n    firmware_ready: qlab-never-on-screen")
        try text.write(toFile: lab, atomically: true, encoding: .utf8)
        let run = try env.qlab("run", lab, "--json-report", env.root + "/r.json")
        // The boot error and the entry it kept from running: infrastructure only (exit 5).
        #expect(run.status == 5, "\(run.output)")
        let report = try TestReport(path: env.root + "/r.json")
        #expect(report.results.map(\.outcome) == [.error, .skipped])
        #expect(report.results.first?.message == "guest linux did not boot: no firmware text \"qlab-never-on-screen\" on the screen within 4 s (boot_timeout)")
        #expect(report.results.first?.screenshot == env.root + "/nofw-linux-boot-0.png")
        let size = try #require(Self.pngSize((try? Data(contentsOf: URL(fileURLWithPath: env.root + "/nofw-linux-boot-0.png"))) ?? Data()))
        #expect(size == (720, 400))
        #expect(env.qemuProcesses().isEmpty)
    }

    @Test func textScreenDecodesCodePage437AndTheBIOSDataArea() {
        var bda = [UInt8](repeating: 0, count: 0x100)
        bda[0x49] = 3
        bda[0x4A] = 132
        bda[0x84] = 42
        bda[0x4E] = 0x00
        bda[0x4F] = 0x10  // page 1 at offset 0x1000
        let layout = TextScreen.Layout(biosDataArea: bda)
        #expect(layout == TextScreen.Layout(mode: 3, columns: 132, rows: 43, address: 0xB9000))
        // Nonsense sizes fall back to 80x25; a page that would run past the window is ignored.
        bda[0x4A] = 3
        bda[0x84] = 0
        bda[0x4F] = 0x7F
        #expect(TextScreen.Layout(biosDataArea: bda) == TextScreen.Layout(mode: 3, columns: 80, rows: 25, address: 0xB8000))
        #expect(!TextScreen.Layout(mode: 0x13).isTextMode)

        let small = TextScreen.Layout(columns: 20, rows: 10)
        var cells = [UInt8](repeating: 0, count: 20 * 10 * 2)
        let row0: [UInt8] = [0xC9, 0xCD, 0xBB, 0x20, 0x1B, 0x5B, 0x32, 0x4A, 0x01, 0x00, 0x41, 0x20]
        for (index, byte) in row0.enumerated() {
            cells[index * 2] = byte
            cells[index * 2 + 1] = 0x1F  // white on blue: dropped
        }
        let screen = TextScreen(layout: small, cells: cells)
        // Box drawing as Unicode; ESC is the VGA's arrow glyph, never a terminal escape.
        #expect(screen.lines[0] == "╔═╗ ←[2J☺ A")
        #expect(screen.text == "╔═╗ ←[2J☺ A")
        #expect(screen.lines.count == 10)
        #expect(screen.contains("[2J"))
        #expect(!screen.text.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" })
    }
}
