import ArgumentParser
import Foundation
import LabCore
import Platform
import QMP

/// Opens a QMP session on a running lab for a command that only reads (no lab lock).
func withReadingSession(_ lab: String, command: String, _ body: @escaping @Sendable (LabSession) async throws -> Void) async throws {
    try await runCancellable(command) { _ in
        do {
            let session = try await LabSession.open(runtime: try LabRuntime.locateExisting(lab))
            defer { session.close() }
            try await body(session)
        } catch let error as ExitCode {
            throw error
        } catch where Task.isCancelled {
            throw error
        } catch {
            reportError("qlab \(command): \(error)")
            throw exitCodeFor(error)
        }
    }
}

/// `qlab screenshot LAB FILE.png`.
struct ScreenshotCommand: AsyncParsableCommand, JSONReporting {
    static let configuration = CommandConfiguration(
        commandName: "screenshot",
        abstract: "Save a running lab's screen as PNG (QMP screendump; the guest needs `display: vga`).",
        discussion: "QEMU 7.1 or later (PNG). The file is written atomically, mode 0644; a device or FIFO is written to, never replaced (docs/reports.md).")

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
    @Argument(help: "The PNG file to write.", completion: .file(extensions: ["png"])) var file: String
    @Flag(help: "Print {\"path\", \"bytes\"} as JSON.") var json = false

    func run() async throws {
        let (file, json) = (file, json)
        try await withReadingSession(lab, command: "screenshot") { session in
            let bytes = try await GuestScreen(session: session).saveScreenshot(to: file)
            if json {
                try printJSON(["path": .string(FileSystem.absolute(file)), "bytes": JSONValue(bytes)])
            } else {
                print("saved \(file) (\(bytes) bytes)")
            }
        }
    }
}

/// `qlab screen LAB --text`.
struct ScreenCommand: AsyncParsableCommand, JSONReporting {
    static let configuration = CommandConfiguration(
        commandName: "screen",
        abstract: "Print a running lab's VGA text screen (read from guest memory; the guest needs `display: vga`).",
        discussion: """
            Reads the text-mode buffer (0xB8000, its size from the BIOS data area, 80x25 by default) \
            with QMP pmemsave and prints it as UTF-8 (code page 437, colours dropped): what \
            SeaBIOS, option ROMs and DOS tools show. --wait TEXT polls until the screen shows TEXT \
            (exit 124 after --timeout). In a graphics mode the buffer is stale (JSON: text_mode false).
            """)

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
    @Flag(help: "The screen as text (the only form so far).") var text = false
    @Option(help: ArgumentHelp("Wait until the screen shows TEXT.", valueName: "TEXT")) var wait: String?
    @Option(help: "Seconds --wait may take.") var timeout: Double = 60
    @Flag(help: "Print {mode, text_mode, columns, rows, address, lines, text} as JSON.") var json = false

    func run() async throws {
        let limit = try checkedSeconds(timeout, option: "--timeout", command: "screen")
        if let wait, wait.isEmpty { throw ValidationError("--wait needs a text") }
        let (wait, json) = (wait, json)
        try await withReadingSession(lab, command: "screen") { session in
            let screen = GuestScreen(session: session)
            let shown: TextScreen
            if let wait {
                shown = try await screen.waitForText(wait, timeout: limit)
            } else {
                shown = try await screen.text()
            }
            if json {
                try printJSON(shown.json)
            } else {
                print(shown.text)
            }
        }
    }
}
