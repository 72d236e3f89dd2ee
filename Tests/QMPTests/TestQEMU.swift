import Foundation
import Platform
import QMP

/// A real `qemu-system-x86_64 -S -nodefaults -display none` with QMP on a
/// Unix socket in a fresh temp dir, for tests. Accel: KVM when /dev/kvm
/// opens, else TCG; no guest code runs before `cont`, so kvm_pvm is fine.
final class TestQEMU: @unchecked Sendable {
    let directory: URL
    let socketPath: String
    let process = Process()
    let accel: String

    init(extraArguments: [String] = []) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("qlab-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        socketPath = directory.appendingPathComponent("qmp.sock").path
        accel = FileManager.default.isReadableFile(atPath: "/dev/kvm") && FileManager.default.isWritableFile(atPath: "/dev/kvm") ? "kvm" : "tcg"
        process.executableURL = URL(fileURLWithPath: Self.executable)
        process.arguments = [
            "-S", "-nodefaults", "-display", "none", "-machine", "q35", "-accel", accel, "-m", "64",
            "-qmp", "unix:\(socketPath),server=on,wait=off",
        ] + extraArguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // The socket file appears at bind(2), a moment before listen(2):
        // wait until a connection is accepted (QEMU then serves the next one).
        let deadline = Date().addingTimeInterval(15)
        while true {
            if let probe = try? UnixSocket.connect(path: socketPath) {
                close(probe)
                break
            }
            guard process.isRunning, Date() < deadline else {
                terminate()
                throw TestQEMUError.didNotStart
            }
            usleep(5_000)
        }
    }

    var pid: Int32 { process.processIdentifier }

    /// `$QLAB_QEMU` (a second QEMU, e.g. scripts/install-qemu10's), else the system's.
    static var executable: String {
        let chosen = ProcessInfo.processInfo.environment["QLAB_QEMU"] ?? ""
        return chosen.isEmpty ? "/usr/bin/qemu-system-x86_64" : chosen
    }

    func connect(negotiate: Bool = true, enableOOB: Bool = false) async throws -> QMPClient {
        try await QMPClient.connect(path: socketPath, negotiate: negotiate, enableOOB: enableOOB)
    }

    /// SIGKILL and reap; idempotent. Every test calls it in a defer.
    func terminate() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }

    /// `executable --version`'s first line, parsed to major.minor.micro.
    static func installedVersion() throws -> (Int, Int, Int) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.executable)
        p.arguments = ["--version"]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let word = text.split(separator: " ").drop(while: { $0 != "version" }).dropFirst().first ?? ""
        let parts = word.split(separator: ".").compactMap { Int($0.prefix(while: \.isNumber)) }
        guard parts.count >= 3 else { throw TestQEMUError.didNotStart }
        return (parts[0], parts[1], parts[2])
    }
}

enum TestQEMUError: Error { case didNotStart }
