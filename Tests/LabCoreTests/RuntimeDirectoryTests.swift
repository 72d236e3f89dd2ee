import Foundation
import LabCore
import Platform
import QMP
import Testing

/// Runtime and state directories that other users can reach: qlab refuses
/// them with the path, owner and mode, changes nothing in them, and never
/// trusts (or signals a pid from) a record read from one.
///
/// "Another user" is uid 65534 (nobody): root can `chown(2)` a tree to it with
/// no account. Those tests need root and are skipped otherwise.
@Suite("Runtime and state directories others can write to (issue 9.3)", .serialized)
struct RuntimeDirectoryTests {
    static let isRoot = geteuid() == 0
    static let needsRoot = "chown to another uid (65534) needs root"
    static let otherUser: uid_t = 65534

    /// The mode bits and owner as `lstat(2)` gives them.
    static func info(_ path: String) -> (mode: mode_t, owner: uid_t, isLink: Bool)? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return (st.st_mode & 0o7777, st.st_uid, st.st_mode & S_IFMT == S_IFLNK)
    }

    /// A directory with exactly `mode` (`chmod(2)` after `mkdir(2)`, past the umask).
    static func makeDirectory(_ path: String, mode: mode_t, owner: uid_t? = nil) throws {
        try #require(mkdir(path, 0o700) == 0, "mkdir \(path)")
        if let owner { try #require(chown(path, owner, owner) == 0, "chown \(path)") }
        try #require(chmod(path, mode) == 0, "chmod \(path)")
    }

    static func entries(_ path: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
    }

    static func bareLab(_ env: QLabTestEnvironment, name: String = "bare") throws -> String {
        _ = try env.makeBlankDisk()
        return try env.writeLab(name, """
            name: \(name)
            machine: {type: q35, accel: tcg, memory: 64M}
            guests:
              bare: {os: linux, disk: blank.qcow2}
            """)
    }

    /// A process whose command line names `qmpSocket`, as the lab's QEMU's
    /// would: what a forged record would point `down` at.
    static func startVictim(naming qmpSocket: String) throws -> Process {
        let victim = Process()
        victim.executableURL = URL(fileURLWithPath: "/bin/sh")
        // sh waits in its `read` builtin on a pipe the test holds: one process, no child
        // left behind, and it ends at once when terminated.
        victim.arguments = ["-c", "read line", "victim", qmpSocket]
        victim.standardInput = Pipe()
        try victim.run()
        return victim
    }

    /// A `lab.json` as `up` writes it, with the given pids.
    static func forgedRecord(name: String, pid: Int32) -> String {
        """
        {"name": "\(name)", "lab_file": "/nonexistent.yaml", "guest": "bare", "qemu_pid": \(pid),
         "supervisor_pid": \(pid), "foreground": false, "started_at": 1,
         "accel": {"accelerator": "tcg", "reason": "forged"}, "devices": [], "passthrough": [],
         "qemu_log_offset": 0, "console_log_offset": 0}
        """
    }

    // MARK: the runtime root

    @Test(.enabled(if: isRoot, "\(needsRoot)"))
    func aRuntimeRootOwnedByAnotherUserIsRefusedAndLeftAlone() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.bareLab(env)
        try Self.makeDirectory(env.runtimeRoot, mode: 0o700, owner: Self.otherUser)
        for arguments in [["up", lab], ["down", "bare"], ["status", "bare"], ["list"], ["qmp", "bare", "query-status"]] {
            let result = try env.qlab(arguments)
            #expect(result.status != 0, "\(arguments): \(result.output)")
            #expect(result.stderr.contains(env.runtimeRoot), "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains("uid 65534"), "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains("mode 0700"), "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains("QLAB_RUNTIME_DIR"), "\(arguments): \(result.stderr)")
        }
        let after = try #require(Self.info(env.runtimeRoot))
        #expect(after.mode == 0o700 && after.owner == Self.otherUser)
        #expect(Self.entries(env.runtimeRoot).isEmpty)
        #expect(env.qemuProcesses().isEmpty)
    }

    @Test func aRuntimeRootOthersCanWriteIsRefusedAndNotChmodded() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.bareLab(env)
        for mode: mode_t in [0o770, 0o707, 0o1777, 0o750] {
            try Self.makeDirectory(env.runtimeRoot, mode: mode)
            let up = try env.qlab("up", lab)
            #expect(up.status != 0, "mode \(String(mode, radix: 8)): \(up.output)")
            #expect(up.stderr.contains(env.runtimeRoot) && up.stderr.contains("mode " + String(format: "%04o", mode)), "\(up.stderr)")
            #expect(Self.info(env.runtimeRoot)?.mode == mode)
            #expect(Self.entries(env.runtimeRoot).isEmpty)
            #expect(env.qemuProcesses().isEmpty)
            rmdir(env.runtimeRoot)
        }
    }

    @Test(.enabled(if: isRoot, "\(needsRoot)"))
    func aParentAnotherUserCanChangeIsRefused() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.bareLab(env)
        // A parent owned by someone else, or writable by others and not sticky:
        // they could rename qlab's directory away and put their own in its place.
        let parent = env.root + "/shared"
        for (mode, owner) in [(mode_t(0o755), Self.otherUser), (0o777, 0)] {
            try Self.makeDirectory(parent, mode: mode, owner: owner)
            var environment = env.environment
            environment["QLAB_RUNTIME_DIR"] = parent + "/run"
            let up = try env.qlab(environment: environment, "up", lab)
            #expect(up.status != 0, "\(up.output)")
            #expect(up.stderr.contains(parent) && up.stderr.contains("mode " + String(format: "%04o", mode)), "\(up.stderr)")
            #expect(Self.entries(parent).isEmpty)
            #expect(Self.info(parent)?.mode == mode)
            rmdir(parent)
        }
        // Sticky and world-writable, like /tmp: fine, and qlab's own dir is 0700.
        try Self.makeDirectory(parent, mode: 0o1777)
        var environment = env.environment
        environment["QLAB_RUNTIME_DIR"] = parent + "/run"
        let status = try env.qlab(environment: environment, "down", "bare")
        #expect(status.status == 3, "no such lab: \(status.output)")
        #expect(Self.entries(parent).isEmpty, "down of a lab that is not running makes nothing")
        let root = try #require(try LabRuntime(name: "bare", runtimeRoot: parent + "/run", stateRoot: env.stateRoot).runtimeRootDirectory(create: true))
        #expect(Self.info(root.path)?.mode == 0o700)
        #expect(Self.info(parent)?.mode == 0o1777)
    }

    // MARK: entries in a runtime root

    @Test func aPlantedSymlinkForTheLabDirectoryIsRefusedAndItsTargetUntouched() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.bareLab(env)
        try Self.makeDirectory(env.runtimeRoot, mode: 0o700)
        let target = env.root + "/target"
        try Self.makeDirectory(target, mode: 0o755)
        try Self.forgedRecord(name: "bare", pid: 1).write(toFile: target + "/lab.json", atomically: false, encoding: .utf8)
        try #require(symlink(target, env.runtimeRoot + "/bare") == 0)

        for arguments in [["up", lab], ["down", "bare"], ["status", "bare"]] {
            let result = try env.qlab(arguments)
            #expect(result.status != 0, "\(arguments): \(result.output)")
            #expect(result.stderr.contains(env.runtimeRoot + "/bare") && result.stderr.contains("symbolic link"), "\(arguments): \(result.stderr)")
        }
        #expect(Self.info(target)?.mode == 0o755)
        #expect(Self.entries(target) == ["lab.json"])
        #expect(Self.info(env.runtimeRoot + "/bare")?.isLink == true)
        #expect(env.qemuProcesses().isEmpty)
        // The library sees no record there either.
        #expect(try env.runtime("bare").record == nil)
    }

    @Test func aPlantedLinkAtATemporaryOrFinalNameCannotRedirectAWrite() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let runtime = env.runtime("bare")
        let directory = try #require(try runtime.runtimeDirectory(create: true))
        let victim = env.root + "/victim"
        try "precious\n".write(toFile: victim, atomically: false, encoding: .utf8)
        try #require(chmod(victim, 0o644) == 0)
        // The names a writer that used `NAME.tmp-PID` would have picked, and the final name itself.
        var planted = [directory.path + "/lab.json"]
        for pid in [getpid(), getpid() + 1] { planted += [directory.path + "/lab.json.tmp-\(pid)", directory.path + "/.lab.json.tmp-\(pid)"] }
        for link in planted { try #require(symlink(victim, link) == 0) }

        let record = try #require(LabRecord(try JSONValue.parse(Self.forgedRecord(name: "bare", pid: 4242))))
        try runtime.writeRecord(record)
        try directory.writeAtomically("stop-requested", [])
        try FileSystem.writeAtomically(directory.path + "/report.json", Array("{}\n".utf8))

        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "precious\n")
        #expect(Self.info(victim)?.mode == 0o644)
        let written = try #require(Self.info(directory.path + "/lab.json"))
        #expect(!written.isLink && written.mode == 0o600)
        #expect(try runtime.record?.qemuPID == 4242)
        // No temporary file is left behind.
        #expect(!Self.entries(directory.path).contains { $0.contains(".tmp-") && !planted.contains(directory.path + "/" + $0) })
    }

    @Test func commandsOnALabThatDoesNotExistTouchNothing() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        // Neither root exists: nothing is made, no lock.
        for arguments in [["down", "nosuchlab"], ["status", "nosuchlab"], ["list"]] {
            let result = try env.qlab(arguments)
            #expect(result.status == (arguments == ["list"] ? 0 : 3), "\(arguments): \(result.output)")
        }
        #expect(!FileManager.default.fileExists(atPath: env.runtimeRoot))
        #expect(!FileManager.default.fileExists(atPath: env.stateRoot))
        #expect(try env.qlab("qmp", "nosuchlab", "query-status").status != 0)
        #expect(!FileManager.default.fileExists(atPath: env.runtimeRoot))

        // A shared sticky directory such as /var/tmp as the runtime or state root:
        // refused, with its mode left 1777 and nothing made in it.
        let shared = env.root + "/vartmp"
        try Self.makeDirectory(shared, mode: 0o1777)
        for variable in ["QLAB_RUNTIME_DIR", "QLAB_STATE_DIR"] {
            var environment = env.environment
            environment[variable] = shared
            for arguments in [["down", "nosuchlab"], ["status", "nosuchlab"]] {
                let result = try env.qlab(environment: environment, arguments)
                #expect(result.status != 0, "\(variable) \(arguments): \(result.output)")
                #expect(result.stderr.contains(shared) && result.stderr.contains("mode 1777") && result.stderr.contains(variable), "\(result.stderr)")
                #expect(Self.info(shared)?.mode == 0o1777)
                #expect(Self.entries(shared).isEmpty)
            }
        }
        #expect(!FileManager.default.fileExists(atPath: env.runtimeRoot))
    }

    // MARK: forged records

    @Test(.enabled(if: isRoot, "\(needsRoot)"))
    func aForgedRecordInAnotherUsersDirectoryNeverLeadsToASignal() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let runtime = env.runtime("bare")
        let victim = try Self.startVictim(naming: runtime.qmpSocketPath)
        defer {
            // SIGKILL: the test process's blocked signals (SIGTERM among them) are inherited.
            kill(victim.processIdentifier, SIGKILL)
            victim.waitUntilExit()
        }
        // 1: the whole runtime root is another user's. 2: the root is ours, the lab dir is not.
        for foreignRoot in [true, false] {
            try? FileManager.default.removeItem(atPath: env.runtimeRoot)
            try Self.makeDirectory(env.runtimeRoot, mode: 0o700, owner: foreignRoot ? Self.otherUser : nil)
            try Self.makeDirectory(runtime.directory, mode: 0o700, owner: Self.otherUser)
            try Self.forgedRecord(name: "bare", pid: victim.processIdentifier).write(toFile: runtime.recordPath, atomically: false, encoding: .utf8)
            #expect(chown(runtime.recordPath, Self.otherUser, Self.otherUser) == 0)

            #expect(try runtime.record == nil, "a record from a directory that fails the checks is never read")
            let down = try env.qlab("down", "bare")
            #expect(down.status != 0, "\(down.output)")
            #expect(down.stderr.contains("uid 65534"), "\(down.stderr)")
            #expect(victim.isRunning, "the forged record's pid was signalled")
            let status = try env.qlab("status", "bare")
            #expect(status.status != 0, "\(status.output)")
            #expect(Self.info(runtime.recordPath)?.owner == Self.otherUser)
            #expect(Self.info(runtime.directory)?.mode == 0o700)
        }
        #expect(victim.isRunning)
    }

    // MARK: the state root

    @Test(.enabled(if: isRoot, "\(needsRoot)"))
    func aStateDirectoryOthersOwnOrShareIsRefused() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.bareLab(env)
        for (mode, owner) in [(mode_t(0o700), Self.otherUser), (0o1777, 0), (0o755, 0)] {
            try Self.makeDirectory(env.stateRoot, mode: mode, owner: owner)
            for arguments in [["up", lab], ["status", "bare"], ["list"]] {
                let result = try env.qlab(arguments)
                #expect(result.status != 0, "\(arguments): \(result.output)")
                #expect(result.stderr.contains(env.stateRoot) && result.stderr.contains("QLAB_STATE_DIR"), "\(arguments): \(result.stderr)")
            }
            #expect(Self.info(env.stateRoot)?.mode == mode && Self.info(env.stateRoot)?.owner == owner)
            #expect(Self.entries(env.stateRoot).isEmpty)
            #expect(env.qemuProcesses().isEmpty)
            // `up` took no lab dir or lock with it.
            #expect(Self.entries(env.runtimeRoot).isEmpty)
            try FileManager.default.removeItem(atPath: env.stateRoot)
        }
        // A foreign lab state dir inside our own root: its last-exit.json is not read.
        try Self.makeDirectory(env.stateRoot, mode: 0o700)
        try Self.makeDirectory(env.stateRoot + "/bare", mode: 0o700, owner: Self.otherUser)
        #expect(env.runtime("bare").exitRecord == nil)
        #expect(try env.qlab("status", "bare").status != 0)
    }

    // MARK: read-only directories (issue 9.4)

    @Test func aReadOnlyExistingDirectoryIsReportedNotChmodded() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.bareLab(env)
        for (path, variable) in [(env.runtimeRoot, "QLAB_RUNTIME_DIR"), (env.stateRoot, "QLAB_STATE_DIR")] {
            try Self.makeDirectory(path, mode: 0o500)
            let up = try env.qlab("up", lab)
            #expect(up.status != 0, "\(up.output)")
            #expect(up.stderr.contains(path) && up.stderr.contains("mode 0500") && up.stderr.contains(variable), "\(up.stderr)")
            #expect(Self.info(path)?.mode == 0o500)
            #expect(env.qemuProcesses().isEmpty)
            try #require(chmod(path, 0o700) == 0)
            try FileManager.default.removeItem(atPath: path)
        }
        // Nor does the general mkdir -p change an existing directory's mode.
        let existing = env.root + "/reports"
        try Self.makeDirectory(existing, mode: 0o555)
        try FileSystem.makeDirectory(existing, mode: 0o700)
        #expect(Self.info(existing)?.mode == 0o555)
        try FileSystem.makeDirectory(existing + "/new", mode: 0o750)
        #expect(Self.info(existing + "/new")?.mode == 0o750)
    }

    // MARK: the normal case

    @Test func runtimeAndStateDirectoriesAreMadePrivate() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let runtime = env.runtime("bare")
        let old = umask(0o277)  // would narrow a new 0700 directory to 0500
        defer { umask(old) }
        try runtime.makeDirectories()
        for path in [env.runtimeRoot, runtime.directory, env.stateRoot, runtime.stateDirectory] {
            #expect(Self.info(path)?.mode == 0o700, "\(path)")
            #expect(Self.info(path)?.owner == geteuid())
        }
        // Made again: the same directories, checked, nothing changed.
        try runtime.makeDirectories()
        #expect(try runtime.runtimeDirectory(create: false)?.path == runtime.directory)
    }
}

extension QLabTestEnvironment {
    /// Runs `qlab ARGS` with another environment.
    func qlab(environment: [String: String], _ arguments: String...) throws -> Result {
        try qlab(arguments, environment: environment)
    }

    func qlab(environment: [String: String], _ arguments: [String]) throws -> Result {
        try qlab(arguments, environment: environment)
    }
}
