import Foundation
import LabCore
import Platform
import Testing

/// `qlab console LAB` attached (not --log): the relay runs off the
/// cooperative pool (Platform's TerminalRelay) and copies both ways until
/// its input ends. Real test guest under TCG.
@Suite("qlab console attached (real test guest, TCG)", .serialized)
struct ConsoleAttachTests {
    @Test func relaysACommandAndItsOutputThenEndsWithItsInput() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try GuestConsoleQEMUTests.guestLab(env, name: "ca")
        try await GuestConsoleQEMUTests.up(env, lab)
        // Booted to the prompt; QEMU's console takes one client, so this one lets go first.
        let console = try GuestConsole.connect(runtime: env.runtime("ca"))
        _ = try await console.waitForReady(try Lab.load(path: lab).selectGuest(nil))
        console.close()

        let process = Process()
        process.executableURL = URL(fileURLWithPath: QLabTestEnvironment.qlabExecutable)
        process.arguments = ["console", "ca"]
        process.environment = env.environment
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate() } }

        // The guest computes the number: seeing 42 means the line went in and its output came back.
        input.fileHandleForWriting.write(Data("echo relay-$((6*7))-done\n".utf8))
        let reader = output.fileHandleForReading
        var seen = ""
        let deadline = ContinuousClock.now + .seconds(60)
        while !seen.contains("relay-42-done"), ContinuousClock.now < deadline {
            var poller = PollSet([(FileDescriptor(rawValue: reader.fileDescriptor), .readable)])
            guard case .success(let ready) = poller.waitOnce(milliseconds: 1000), ready > 0 else { continue }
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            seen += String(decoding: chunk, as: UTF8.self)
        }
        #expect(seen.contains("relay-42-done"), "console output: \(seen)")

        // End of input ends the relay (no terminal: Ctrl-] is not looked for).
        try input.fileHandleForWriting.close()
        let exitDeadline = ContinuousClock.now + .seconds(30)
        while process.isRunning, ContinuousClock.now < exitDeadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(!process.isRunning, "qlab console did not end when its input did")
        if !process.isRunning { #expect(process.terminationStatus == 0) }
        _ = try env.qlab("down", "ca")
    }
}
