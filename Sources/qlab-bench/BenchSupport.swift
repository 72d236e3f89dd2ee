import Foundation
// Glibc: the floor qlab is measured against drives QEMU and its sockets with raw posix_spawn, waitpid, read and
// write, on purpose: no qlab layer between the benchmark and the system (see the hand and floor columns).
import Platform
import QMP

/// Latency samples and the figures printed from them.
struct LatencySamples {
    var nanoseconds: [UInt64] = []
    var total: Duration = .zero
    /// CPU time (user + system) the client used, all its threads.
    var cpu: Duration = .zero

    var commandsPerSecond: Double { Double(nanoseconds.count) / total.seconds }

    /// Runs `body` `n` times, timing each call and all of them.
    static func measure(_ n: Int, _ body: () -> Void) -> LatencySamples {
        var samples = LatencySamples()
        samples.nanoseconds.reserveCapacity(n)
        let clock = ContinuousClock()
        let cpuStart = processCPUTime()
        let start = clock.now
        for _ in 0..<n {
            let t = clock.now
            body()
            samples.nanoseconds.append((clock.now - t).nanoseconds)
        }
        samples.total = clock.now - start
        samples.cpu = processCPUTime() - cpuStart
        return samples
    }

    /// `getrusage(RUSAGE_SELF)`: user + system time of every thread of this process.
    static func processCPUTime() -> Duration {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let user = Duration.seconds(usage.ru_utime.tv_sec) + .microseconds(usage.ru_utime.tv_usec)
        let system = Duration.seconds(usage.ru_stime.tv_sec) + .microseconds(usage.ru_stime.tv_usec)
        return user + system
    }

    mutating func add(_ other: LatencySamples) {
        nanoseconds += other.nanoseconds
        total += other.total
        cpu += other.cpu
    }

    func percentile(_ p: Double) -> Double {
        let sorted = nanoseconds.sorted()
        guard !sorted.isEmpty else { return 0 }
        let index = min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)
        return Double(sorted[max(0, index)]) / 1000
    }

    func line(_ label: String) -> String {
        label.padding(toLength: 10, withPad: " ", startingAt: 0)
            + String(
                format: "%9.0f cmd/s   p50 %7.1f us   p99 %7.1f us   total %.3f s   client cpu %5.1f us/cmd",
                commandsPerSecond, percentile(0.5), percentile(0.99), total.seconds,
                cpu.seconds * 1e6 / Double(max(1, nanoseconds.count)))
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    var nanoseconds: UInt64 { UInt64(components.seconds) * 1_000_000_000 + UInt64(components.attoseconds / 1_000_000_000) }
}

/// A `qemu-system-x86_64 -S` with one or more QMP monitors (QEMU serves
/// one client per monitor socket), for benchmarks.
final class BenchQEMU {
    let directory: String
    let socketPaths: [String]
    let process = Process()

    var socketPath: String { socketPaths[0] }

    init(monitors: Int = 1, extraArguments: [String] = [], accel: String = "tcg") throws {
        directory = NSTemporaryDirectory() + "qlab-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let directory = directory
        socketPaths = (0..<max(1, monitors)).map { "\(directory)/qmp\($0).sock" }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-system-x86_64")
        process.arguments = ["-S", "-nodefaults", "-display", "none", "-machine", "q35", "-accel", accel, "-m", "64"]
            + socketPaths.flatMap { ["-qmp", "unix:\($0),server=on,wait=off"] } + extraArguments
        process.standardError = FileHandle.nullDevice
        try process.run()
        // The socket file appears at bind(2), a moment before listen(2): wait until one connects.
        let deadline = Date().addingTimeInterval(15)
        while true {
            if let fd = try? UnixSocket.connect(path: socketPaths[socketPaths.count - 1]) {
                close(fd)
                break
            }
            guard process.isRunning, Date() < deadline else { stop(); throw BenchError("QEMU did not start") }
            usleep(2000)
        }
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The floor: a blocking socket client with no framing logic beyond "read to newline".
final class RawQMPClient {
    let fd: Int32
    var buffer = [UInt8](repeating: 0, count: 65536)
    var pending: [UInt8] = []

    init(path: String) throws {
        fd = try UnixSocket.connect(path: path)
        _ = readLine()
        send(#"{"execute":"qmp_capabilities"}"# + "\n")
        _ = readLine()
    }

    deinit { close(fd) }

    func send(_ text: String) {
        var text = text
        text.withUTF8 { _ = write(fd, $0.baseAddress, $0.count) }
    }

    /// Reads up to and including the next newline; returns the line's length.
    func readLine() -> Int {
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                pending.removeFirst(newline + 1)
                return newline
            }
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { return -1 }
            pending.append(contentsOf: buffer[0..<n])
        }
    }

    /// Skips events: returns after a line that is a reply.
    func roundTrip(_ command: String) {
        send(command)
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                let isEvent = pending[..<newline].starts(with: Array(#"{"timestamp""#.utf8))
                pending.removeFirst(newline + 1)
                if !isEvent { return }
                continue
            }
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { return }
            pending.append(contentsOf: buffer[0..<n])
        }
    }
}
