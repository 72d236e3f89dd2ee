import Foundation
import LabCore
import Platform
import QMP
import Testing

/// `qlab up` runs each lab's supervisor as `qlab-supervisor` (next to the
/// qlab binary), a small executable that links no Foundation; without it,
/// `qlab _supervise` takes over and says so in the supervisor log.
@Suite("Supervisor executable (real QEMU)", .serialized)
struct SupervisorExecutableTests {
    static var supervisorExecutable: String {
        URL(fileURLWithPath: QLabTestEnvironment.qlabExecutable).deletingLastPathComponent().appendingPathComponent("qlab-supervisor").path
    }

    /// The shared objects mapped into `pid` (/proc/PID/maps' paths).
    static func mappedFiles(_ pid: Int32) throws -> [String] {
        let maps = try String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)
        return maps.split(separator: "\n").compactMap { line in
            line.split(separator: " ", omittingEmptySubsequences: true).dropFirst(5).first.map(String.init)
        }
    }

    @Test func upRunsQlabSupervisorWhichMapsNoFoundation() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try LifecycleTests.bareLab(env)
        let up = try env.qlab("up", lab)
        #expect(up.status == 0, "\(up.stderr)")
        let record = try #require(try env.runtime("bare").record)
        let runtime = env.runtime("bare")
        // The supervisor is qlab-supervisor, recognised as the lab's supervisor.
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(record.supervisorPID)/exe")
        #expect(URL(fileURLWithPath: exe).lastPathComponent == "qlab-supervisor")
        #expect(runtime.liveSupervisor(record) == record.supervisorPID)
        let mapped = try Self.mappedFiles(record.supervisorPID)
        #expect(mapped.contains { $0.contains("qlab-supervisor") })
        #expect(!mapped.contains { $0.contains("Foundation") }, "\(mapped.filter { $0.contains("Foundation") })")
        let statusRun = try env.qlab("status", "bare", "--json")
        #expect(statusRun.status == 0)
        let status = try JSONValue.parse(statusRun.stdout)
        #expect(status["supervised"]?.boolValue == true)
        #expect(try env.qlab("down", "bare").status == 0)
        #expect(!ProcessTable.isRunning(record.supervisorPID))
        #expect(env.qemuProcesses().isEmpty)
    }

    /// A symbol-level check that holds for the static build too.
    @Test func qlabSupervisorHasNoFoundationSymbols() throws {
        let path = Self.supervisorExecutable
        #expect(FileManager.default.isExecutableFile(atPath: path), "build qlab-supervisor (swift build)")
        let data = try #require(FileManager.default.contents(atPath: path))
        // Swift mangles Foundation's symbols as `$s10Foundation`; a binary that
        // links it (qlab) has thousands of them.
        let marker = Data("s10Foundation".utf8)
        #expect(data.range(of: marker) == nil)
        let qlab = try #require(FileManager.default.contents(atPath: QLabTestEnvironment.qlabExecutable))
        #expect(qlab.range(of: marker) != nil)
    }

    @Test func qlabSupervisorRefusesBadArgumentsWithUsage() throws {
        for arguments in [[], ["_supervise"], ["_supervise", "/nonexistent/launch.json"], ["_supervise", "x", "--ready-fd", "no"], ["other"]] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Self.supervisorExecutable)
            process.arguments = arguments
            let err = Pipe()
            process.standardError = err
            try process.run()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == ExitStatus.usage.rawValue, "\(arguments)")
            #expect(text.hasPrefix("qlab-supervisor: "), "\(arguments): \(text)")
        }
        #expect(try SupervisorProcess.Arguments.parse(["_supervise", "/r/lab/launch.json", "--ready-fd", "5", "--owner-fd", "7", "--owned"]).get()
            == SupervisorProcess.Arguments(specPath: "/r/lab/launch.json", readyFD: 5, ownerFD: 7, owned: true))
        let arguments = SupervisorProcess.Arguments(specPath: "/r/lab/launch.json", readyFD: 5, ownerFD: 7, owned: true)
        #expect(try SupervisorProcess.Arguments.parse(arguments.argv).get() == arguments)
    }

    @Test func withoutQlabSupervisorUpFallsBackToQlabSupervise() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        // A directory holding only qlab (a symlink): no qlab-supervisor next to it.
        let bin = env.root + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: bin + "/qlab", withDestinationPath: QLabTestEnvironment.qlabExecutable)
        #expect(LabController.supervisorProgram(qlab: bin + "/qlab") == bin + "/qlab")
        #expect(LabController.supervisorProgram(qlab: QLabTestEnvironment.qlabExecutable) == Self.supervisorExecutable)

        let lab = try LifecycleTests.bareLab(env)
        let controller = LabController(supervisorExecutable: bin + "/qlab", environment: env.environment)
        let result = try await controller.up(labFile: lab, options: LabController.UpOptions())
        let record = result.record
        #expect(ProcessTable.commandLine(record.supervisorPID).contains("_supervise"))
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(record.supervisorPID)/exe")
        #expect(URL(fileURLWithPath: exe).lastPathComponent == "qlab")
        #expect(result.runtime.liveSupervisor(record) == record.supervisorPID)
        let log = try String(contentsOfFile: result.runtime.supervisorLogPath, encoding: .utf8)
        #expect(log.contains("no qlab-supervisor next to \(bin)/qlab"))
        _ = try await controller.down("bare")
        #expect(!ProcessTable.isRunning(record.qemuPID))
        #expect(!ProcessTable.isRunning(record.supervisorPID))
    }
}
