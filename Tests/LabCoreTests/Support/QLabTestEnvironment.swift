import Foundation
import LabCore
import Platform
import QMP

/// A private QLAB_RUNTIME_DIR/QLAB_STATE_DIR and lab directory for one
/// test, and a way to run the built `qlab` binary in it. `cleanUp()` takes
/// down every lab still running there, so no QEMU outlives a test.
class QLabTestEnvironment: @unchecked Sendable {
    let root: String
    let runtimeRoot: String
    let stateRoot: String
    let labDirectory: String

    init(prefix: String = "qlt") throws {
        // Short paths: Unix socket paths are limited to 107 bytes.
        root = "/tmp/\(prefix)-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        runtimeRoot = root + "/run"
        stateRoot = root + "/state"
        labDirectory = root + "/labs"
        try FileManager.default.createDirectory(atPath: labDirectory, withIntermediateDirectories: true)
    }

    var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["QLAB_RUNTIME_DIR"] = runtimeRoot
        env["QLAB_STATE_DIR"] = stateRoot
        return env
    }

    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// What images/build.sh builds (the README's test command builds it first).
    static var imagesOut: String { repositoryRoot + "/images/out" }

    /// A lab like labs/emulated-scsi.yaml with absolute image paths and the given tests.
    /// `guestExtra`: more lines of the guest's own (indented four spaces), e.g. `boot_keys:`.
    func writeGuestLab(_ name: String, memory: String = "256M", devices: String? = nil, tests: String, extra: String = "", guestExtra: String = "") throws -> String {
        let out = Self.imagesOut
        let defaultDevices = """
              scsi-lsi:
                emulated: {driver: lsi53c895a, disks: [{image: \(out)/scsi-target.qcow2}]}
                attach: hotplug
            """
        return try writeLab(name, """
            name: \(name)
            machine: {type: q35, accel: tcg, memory: \(memory), smp: 1}
            devices:
            \(devices ?? defaultDevices)
            guests:
              linux:
                os: linux
                kernel: \(out)/linux/vmlinuz
                initrd: \(out)/linux/initrd.img
                append: console=ttyS0 quiet panic=-1
                disk: \(out)/linux/disk.qcow2
                ready: qlab-guest-ready
                prompt: "# "
                boot_timeout: 180s
                rescan: qlab-scsi-scan -w 20 -n 1
            \(guestExtra)
            tests:
            \(tests)
            \(extra)
            """)
    }

    /// The `qlab` executable built next to the test bundle.
    static var qlabExecutable: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        while dir.path != "/" {
            let candidate = dir.appendingPathComponent("qlab").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return "qlab"
    }

    var controller: LabController {
        LabController(supervisorExecutable: Self.qlabExecutable, environment: environment)
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        /// Both streams, stdout first.
        var output: String { stdout + stderr }
    }

    /// Runs `qlab ARGS` to completion.
    @discardableResult
    func qlab(_ arguments: String...) throws -> Result {
        try qlab(arguments)
    }

    /// Runs `qlab ARGS` to completion, with `environment` instead of this test's (a shared directory, another root).
    func qlab(_ arguments: [String], environment: [String: String]? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.qlabExecutable)
        process.arguments = arguments
        process.environment = environment ?? self.environment
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both to EOF before waiting, so a full pipe cannot block the child.
        let group = DispatchGroup()
        nonisolated(unsafe) var outData = Data()
        nonisolated(unsafe) var errData = Data()
        group.enter()
        DispatchQueue.global().async {
            outData = out.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Writes a lab file into the lab directory; returns its path.
    func writeLab(_ name: String, _ yaml: String) throws -> String {
        let path = labDirectory + "/" + name + ".yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// A blank qcow2 base image in the lab directory.
    func makeBlankDisk(_ name: String = "blank.qcow2", size: String = "16M") throws -> String {
        let path = labDirectory + "/" + name
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-img")
        process.arguments = ["create", "-q", "-f", "qcow2", path, size]
        try process.run()
        process.waitUntilExit()
        return path
    }

    func runtime(_ lab: String) -> LabRuntime {
        LabRuntime(name: lab, runtimeRoot: runtimeRoot, stateRoot: stateRoot)
    }

    /// Every QEMU started under this environment: by its QMP socket path in argv.
    func qemuProcesses() -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            let argv = ProcessTable.commandLine(pid)
            return argv.first?.hasSuffix("qemu-system-x86_64") == true && argv.contains { $0.contains(runtimeRoot) }
        }
    }

    /// Takes down every lab here, kills anything left, removes the tree.
    func cleanUp() {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: runtimeRoot)) ?? [] where !name.hasSuffix(".lock") {
            _ = try? qlab("down", name)
        }
        for pid in qemuProcesses() { kill(pid, SIGKILL) }
        try? FileManager.default.removeItem(atPath: root)
        // Fast-revert labs keep guest RAM files on /dev/shm, under a root named after this
        // runtime root (only this test's; a QLAB_RAM_DIR given from outside is left alone).
        if (ProcessInfo.processInfo.environment["QLAB_RAM_DIR"] ?? "").isEmpty {
            try? FileManager.default.removeItem(atPath: runtime("").ramRoot)
        }
    }
}
