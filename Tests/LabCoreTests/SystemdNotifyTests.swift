import Foundation
import LabCore
import Platform
import Synchronization
import Testing

/// `qlab up --foreground` under systemd (`Type=notify`): READY=1 once the lab
/// is up, STOPPING=1 on the way down, to the NOTIFY_SOCKET the test listens on.
@Suite("sd_notify from up --foreground (real QEMU)", .serialized)
struct SystemdNotifyTests {
    /// A datagram socket bound at `name` (a path, or `@abstract`), as systemd makes it.
    final class Listener {
        let fd: Int32
        let path: String?

        init(_ name: String) throws {
            let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            self.fd = fd
            path = name.hasPrefix("@") ? nil : name
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            var bytes = Array(name.utf8)
            if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
            withUnsafeMutableBytes(of: &address.sun_path) { buffer in
                for (index, byte) in bytes.enumerated() { buffer[index] = byte }
            }
            let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
            let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
            try #require(bound == 0, "bind \(name): errno \(errno)")
            // A bound on the wait, not an assertion of speed: a lost datagram fails the test instead of hanging it.
            var limit = timeval(tv_sec: 120, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        }

        deinit {
            close(fd)
            if let path { unlink(path) }
        }

        func receive() -> String? {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            return count < 0 ? nil : String(decoding: buffer[..<count], as: UTF8.self)
        }
    }

    @Test func notifyReachesPathAndAbstractSockets() throws {
        let name = "/tmp/qlab-notify-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let listener = try Listener(name)
        #expect(SystemdNotify.notify("READY=1", environment: ["NOTIFY_SOCKET": name]))
        #expect(listener.receive() == "READY=1")
        let abstract = "@qlab-notify-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let abstractListener = try Listener(abstract)
        #expect(SystemdNotify.notify("STOPPING=1", environment: ["NOTIFY_SOCKET": abstract]))
        #expect(abstractListener.receive() == "STOPPING=1")
        // Not under systemd, or a socket nobody listens on: nothing sent, nothing fatal.
        #expect(!SystemdNotify.notify("READY=1", environment: [:]))
        #expect(!SystemdNotify.notify("READY=1", environment: ["NOTIFY_SOCKET": name + "-gone"]))
    }

    /// Fills `listener`'s queue (datagrams nobody reads) until a send would block.
    static func fill(_ name: String) throws {
        var address = Array(name.utf8)
        if address.first == UInt8(ascii: "@") { address[0] = 0 }
        for _ in 0..<1_000_000 {
            switch DatagramSocket.send(Array("x".utf8), to: address) {
            case .success: continue
            case .failure(let error):
                try #require(error.code == EAGAIN, "filling \(name): \(error)")
                return
            }
        }
        Issue.record("\(name) took a million datagrams without filling")
    }

    /// A notify socket whose queue is full: the send returns at once, false (dropped), the datagram is not waited on.
    @Test func aFullSocketDropsTheNotification() throws {
        let name = "/tmp/qlab-notify-full-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let listener = try Listener(name)
        try Self.fill(name)
        let sent = Mutex<Bool?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            sent.withLock { $0 = SystemdNotify.notify("READY=1", environment: ["NOTIFY_SOCKET": name]) }
            done.signal()
        }
        // A bound on the wait, not on speed: a blocking send would never return.
        #expect(done.wait(timeout: .now() + 60) == .success, "notify returned")
        #expect(sent.withLock { $0 } == false)
        // What is queued is the test's own filler, never READY=1.
        #expect(listener.receive() == "x")
    }

    /// `up --foreground` under a NOTIFY_SOCKET nobody reads (full): the lab comes up, SIGTERM
    /// takes it down, and the process ends (143) instead of hanging in a send.
    @Test func foregroundLabStopsWithAFullNotifySocket() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let disk = try env.makeBlankDisk()
        let lab = try env.writeLab("unheard", """
            name: unheard
            machine: {type: q35, accel: tcg, memory: 64M}
            guests:
              bare: {os: linux, disk: \(disk)}
            """)
        let socketPath = env.root + "/full.sock"
        let listener = try Listener(socketPath)
        try Self.fill(socketPath)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: QLabTestEnvironment.qlabExecutable)
        process.arguments = ["up", lab, "--paused", "--foreground"]
        var environment = env.environment
        environment["NOTIFY_SOCKET"] = socketPath
        process.environment = environment
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        // A safety bound, not a timing assertion: a process that never says it is up is ended, so the read below ends.
        DispatchQueue.global().asyncAfter(deadline: .now() + 300) { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        // Up: its line on stdout (READY=1 could not be delivered).
        let upLine = try #require(Self.firstLine(output.fileHandleForReading), "no up line")
        #expect(upLine.hasPrefix("lab unheard up: "), "\(upLine)")
        kill(process.processIdentifier, SIGTERM)
        // A bound on the wait, not on speed: before the fix this process was still there 30 s later, forever.
        #expect(exited.wait(timeout: .now() + 120) == .success, "the foreground process ended after SIGTERM")
        #expect(process.terminationStatus == 143)
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(stderr.contains("sd_notify: READY=1 not sent to NOTIFY_SOCKET \(socketPath) (dropped: "), "\(stderr)")
        #expect(stderr.contains("sd_notify: STOPPING=1 not sent"), "\(stderr)")
        #expect(env.qemuProcesses().isEmpty)
        _ = listener
    }

    /// The first line read from `handle` (a bounded read: nil at end of file).
    static func firstLine(_ handle: FileHandle) -> String? {
        var line = Data()
        while true {
            let byte = handle.readData(ofLength: 1)
            if byte.isEmpty { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
            if byte.first == 0x0A { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
    }

    @Test func foregroundLabSaysReadyAndStopping() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let disk = try env.makeBlankDisk()
        let lab = try env.writeLab("notified", """
            name: notified
            machine: {type: q35, accel: tcg, memory: 64M}
            guests:
              bare: {os: linux, disk: \(disk)}
            """)
        let socketPath = env.root + "/notify.sock"
        let listener = try Listener(socketPath)

        func start() throws -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: QLabTestEnvironment.qlabExecutable)
            process.arguments = ["up", lab, "--paused", "--foreground"]
            var environment = env.environment
            environment["NOTIFY_SOCKET"] = socketPath
            process.environment = environment
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            return process
        }

        // Taken down by `qlab down`: QEMU quits, the foreground process says STOPPING=1 and exits 0.
        let first = try start()
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL) } }
        let ready = try #require(listener.receive(), "no READY=1")
        #expect(ready.hasPrefix("READY=1\nMAINPID=\(first.processIdentifier)\nSTATUS=lab notified up: QEMU pid "), "\(ready)")
        #expect(try env.qlab("down", "notified").status == 0)
        #expect(listener.receive() == "STOPPING=1")
        first.waitUntilExit()
        #expect(first.terminationStatus == 0)

        // Stopped by systemd (SIGTERM to the process we started): STOPPING=1, exit 143, nothing left.
        let second = try start()
        defer { if second.isRunning { kill(second.processIdentifier, SIGKILL) } }
        #expect(listener.receive()?.hasPrefix("READY=1\nMAINPID=\(second.processIdentifier)\n") == true)
        kill(second.processIdentifier, SIGTERM)
        #expect(listener.receive() == "STOPPING=1")
        second.waitUntilExit()
        #expect(second.terminationStatus == 143)
        #expect(env.qemuProcesses().isEmpty)
    }
}
