import Foundation
import Platform

/// A `qlab` command running in the background, its output in files.
final class BackgroundQLab {
    let process = Process()
    let stdoutPath: String
    let stderrPath: String

    init(_ env: QLabTestEnvironment, _ arguments: [String]) throws {
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        stdoutPath = env.root + "/\(tag).out"
        stderrPath = env.root + "/\(tag).err"
        for path in [stdoutPath, stderrPath] where !FileManager.default.createFile(atPath: path, contents: nil) {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
        process.executableURL = URL(fileURLWithPath: QLabTestEnvironment.qlabExecutable)
        process.arguments = arguments
        process.environment = env.environment
        process.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Signals it and waits for its exit status (a safety limit, then SIGKILL).
    func signal(_ number: Int32, then second: Int32? = nil) -> Int32 {
        kill(pid, number)
        if let second { kill(pid, second) }
        return finish()
    }

    /// Its exit status; `killedBy + N` when signal N ended it (so 130 means qlab chose 130).
    func finish() -> Int32 {
        if !waitUntil(limit: .seconds(120), { !process.isRunning }) { kill(pid, SIGKILL) }
        process.waitUntilExit()
        return process.terminationReason == .uncaughtSignal ? Self.killedBy + process.terminationStatus : process.terminationStatus
    }

    static let killedBy: Int32 = 1000

    deinit { if process.isRunning { kill(pid, SIGKILL) } }
}
