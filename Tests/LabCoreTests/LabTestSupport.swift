import Foundation
import LabCore

/// A temp directory for one test, removed by `remove()`.
struct LabTempDirectory {
    let path: String

    init(_ tag: String = "lab") throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("qlab-\(tag)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        let file = path + "/" + name
        try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

enum LabFixtures {
    /// The repository root (Tests/LabCoreTests/ → ../..).
    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    static var emulatedLab: String { repositoryRoot + "/labs/emulated-scsi.yaml" }
    static var benchLab: String { repositoryRoot + "/labs/aha2930-bridge.yaml" }

    static let tcg = AccelDecision(.tcg, reason: "test")
    static let kvm = AccelDecision(.kvm, reason: "test")

    /// Loads YAML text written to a temp lab file; returns the error when it fails.
    static func loadError(_ yaml: String, file: String = "lab.yaml") throws -> LabFileError? {
        let dir = try LabTempDirectory()
        defer { dir.remove() }
        let path = try dir.write(file, yaml)
        do {
            _ = try Lab.load(path: path)
            return nil
        } catch {
            return error
        }
    }

    static func load(_ yaml: String, in dir: LabTempDirectory, file: String = "lab.yaml") throws -> Lab {
        try Lab.load(path: try dir.write(file, yaml))
    }

    /// Runs a program to completion; returns its exit status and stdout+stderr.
    static func run(_ argv: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = argv
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func value(after option: String, in args: [String]) -> [String] {
        args.indices.filter { args[$0] == option && $0 + 1 < args.count }.map { args[$0 + 1] }
    }
}
