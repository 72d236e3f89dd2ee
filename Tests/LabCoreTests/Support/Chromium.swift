import Foundation
import Testing

/// Debian's headless Chromium (scripts/install-deps installs it), for tests
/// that load a page qlab wrote the way a person's browser does. Each call
/// uses a private profile directory, removed afterwards.
enum Chromium {
    static var executable: String? {
        for path in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        return nil
    }

    /// The trait of a test that needs the browser: skipped, with this message, where it is missing
    /// (CI installs it: scripts/install-deps).
    static var installed: ConditionTrait {
        .enabled(if: executable != nil, "chromium is not installed (scripts/install-deps installs Debian's chromium)")
    }

    static func require() throws -> String {
        try #require(executable, "chromium is not installed (scripts/install-deps installs Debian's chromium)")
    }

    /// The DOM after loading `file` (`--dump-dom`); `screenshot` also saves a PNG of the page.
    /// `extraArguments`: e.g. `--allow-file-access-from-files` for a test page that reads another file's DOM.
    static func load(_ file: String, screenshot: String? = nil, extraArguments: [String] = []) throws -> String {
        let executable = try require()
        let profile = "/tmp/qlab-chromium-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        defer { try? FileManager.default.removeItem(atPath: profile) }
        var arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + profile, "--no-first-run",
                         "--disable-background-networking", "--virtual-time-budget=2000"] + extraArguments
        if let screenshot { arguments += ["--screenshot=" + screenshot, "--window-size=1200,1600", "--hide-scrollbars"] }
        let dom = try run(executable, arguments + ["--dump-dom", "file://" + file])
        #expect(!dom.isEmpty, "chromium printed no DOM for \(file)")
        return dom
    }

    /// Runs chromium to its end (killed after two minutes: a hung browser fails the test, it does not hang it).
    static func run(_ executable: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = NSTemporaryDirectory()
        process.environment = environment
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let pid = process.processIdentifier
        let watchdog = DispatchWorkItem { kill(pid, SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + 120, execute: watchdog)
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        watchdog.cancel()
        #expect(process.terminationReason == .exit, "chromium was killed (hung?)")
        return String(decoding: data, as: UTF8.self)
    }
}
