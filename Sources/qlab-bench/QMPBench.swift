import Foundation
import QMP

/// `qlab-bench qmp [--count N] [--rounds R] [--clients LIST]`: sequential
/// query-status round trips against one real QEMU, for qlab's client, a raw
/// blocking socket client (the floor) and qemu.qmp (QEMU's Python library)
/// when it is installed.
///
/// The clients run interleaved, `count / rounds` round trips at a time in a
/// rotating order, so a change in the shared machine's load hits them all
/// alike. They take turns on QEMU's one QMP monitor (as qlab's QEMUs have):
/// each turn connects, warms up, is timed, and disconnects. (Every extra
/// monitor slows QEMU's reading, which is one byte per main-loop turn.)
enum QMPBench {
    static let allClients = ["raw", "raw-id", "qlab", "qlab-pool", "qemu.qmp"]
    /// Run unless --clients says otherwise (raw-id is for explaining the gap).
    static let defaultClients = ["raw", "raw-id", "qlab", "qlab-pool", "qemu.qmp"]

    static func run(arguments: [String]) async throws {
        var count = 10_000
        var rounds = 10
        var selected = defaultClients
        var index = 0
        while index < arguments.count {
            let value = index + 1 < arguments.count ? arguments[index + 1] : ""
            switch arguments[index] {
            case "--count": count = try positive(value, "--count")
            case "--rounds": rounds = try positive(value, "--rounds")
            case "--clients":
                selected = value.split(separator: ",").map(String.init)
                if let unknown = selected.first(where: { !allClients.contains($0) }) {
                    throw BenchError("--clients: unknown client \(unknown); known: \(allClients.joined(separator: ","))")
                }
            default:
                throw BenchError("unknown option \(arguments[index]); usage: qlab-bench qmp [--count N] [--rounds R] [--clients \(allClients.joined(separator: ","))]")
            }
            index += 2
        }
        rounds = min(rounds, count)

        let qemu = try BenchQEMU()
        defer { qemu.stop() }
        let socket = qemu.socketPath
        print("qlab-bench qmp: \(count) sequential query-status round trips per client, one QEMU (-S, TCG), "
            + "clients interleaved in \(rounds) rounds")

        var runners: [(name: String, runner: any RoundTripRunner)] = []
        var missing: [String] = []
        for name in selected {
            switch name {
            case "raw": runners.append((name, RawRunner(path: socket, command: #"{"execute":"query-status"}"#)))
            case "raw-id": runners.append((name, RawRunner(path: socket, command: #"{"execute":"query-status","id":0}"#)))
            case "qlab": runners.append((name, QLabRunner(path: socket, preferReaderThread: true)))
            case "qlab-pool": runners.append((name, QLabRunner(path: socket, preferReaderThread: false)))
            default:
                if let python = PythonQEMUQMPRunner(path: socket) { runners.append((name, python)) } else { missing.append(name) }
            }
        }
        // Warm-up: first calls fault in code and grow buffers.
        for (_, runner) in runners { _ = try await runner.run(500) }

        var samples = [String: LatencySamples]()
        for round in 0..<rounds {
            let share = count / rounds + (round < count % rounds ? 1 : 0)
            for offset in 0..<runners.count {
                let (name, runner) = runners[(round + offset) % runners.count]
                samples[name, default: LatencySamples()].add(try await runner.run(share))
            }
        }
        for (_, runner) in runners { await runner.close() }

        for name in selected {
            if let figures = samples[name] { print(figures.line(name)) }
        }
        if missing.contains("qemu.qmp") {
            print("qemu.qmp   not installed: `pip install qemu.qmp` (for the python3 on PATH) adds it to this comparison")
        }
        let raw = samples["raw"]?.total.seconds
        let qlab = samples["qlab"]?.total.seconds
        let pool = samples["qlab-pool"]?.total.seconds
        let python = samples["qemu.qmp"]?.total.seconds
        if let qlab, let raw { print(String(format: "ratio qlab/raw: %.2f", qlab / raw)) }
        if let qlab, let python { print(String(format: "ratio qlab/qemu.qmp: %.2f", qlab / python)) }
        if let pool, let raw {
            print(String(format: "(qlab-pool/raw: %.2f) ", pool / raw)
                + "qlab: inside client.withPreferredExecutor, replies resume the caller on the reader thread; "
                + "qlab-pool: no executor preference, the caller runs on the cooperative pool")
        }
        if let withID = samples["raw-id"]?.total.seconds, let raw {
            print(String(format: "(raw-id/raw: %.2f) ", withID / raw)
                + "raw-id: the raw client sending the 7 bytes of an id (,\"id\":0); QEMU 7.2 reads QMP one byte per main-loop turn")
            if let qlab { print(String(format: "(qlab/raw-id: %.2f) the client's own cost over a floor that routes by id", qlab / withID)) }
        }
    }

    static func positive(_ text: String, _ option: String) throws -> Int {
        guard let n = Int(text), n > 0 else { throw BenchError("\(option) needs a positive number, not \"\(text)\"") }
        return n
    }
}

/// One client that connects, warms up with `warmUp` round trips, runs `n`
/// timed sequential query-status round trips and disconnects.
protocol RoundTripRunner {
    func run(_ n: Int) async throws -> LatencySamples
    func close() async
}

/// Untimed round trips on each new connection before the timed ones.
let warmUp = 50

/// The floor: a blocking socket client with no framing logic beyond
/// "read to newline", sending one constant command line.
final class RawRunner: RoundTripRunner {
    let path: String
    let command: String

    init(path: String, command: String) {
        self.path = path
        self.command = command + "\n"
    }

    func run(_ n: Int) async throws -> LatencySamples {
        let client = try RawQMPClient(path: path)
        for _ in 0..<warmUp { client.roundTrip(command) }
        return LatencySamples.measure(n) { client.roundTrip(command) }
    }

    func close() async {}
}

/// qlab's QMPClient, with the caller on the reader thread or on the cooperative pool.
final class QLabRunner: RoundTripRunner {
    let path: String
    let preferReaderThread: Bool

    init(path: String, preferReaderThread: Bool) {
        self.path = path
        self.preferReaderThread = preferReaderThread
    }

    func run(_ n: Int) async throws -> LatencySamples {
        let client = try await QMPClient.connect(path: path)
        defer { client.close() }
        if preferReaderThread {
            return try await client.withPreferredExecutor { try await loop(client, n) }
        }
        return try await loop(client, n)
    }

    private func loop(_ client: QMPClient, _ n: Int) async throws -> LatencySamples {
        for _ in 0..<warmUp { _ = try await client.execute("query-status") }
        var samples = LatencySamples()
        samples.nanoseconds.reserveCapacity(n)
        let clock = ContinuousClock()
        let cpuStart = LatencySamples.processCPUTime()
        let start = clock.now
        for _ in 0..<n {
            let t = clock.now
            _ = try await client.execute("query-status")
            samples.nanoseconds.append((clock.now - t).nanoseconds)
        }
        samples.total = clock.now - start
        samples.cpu = LatencySamples.processCPUTime() - cpuStart
        return samples
    }

    func close() async {}
}

/// qemu.qmp's QMPClient in a python3 child that runs `n` round trips per
/// line it reads and answers with a JSON line of latencies.
final class PythonQEMUQMPRunner: RoundTripRunner {
    let process = Process()
    let input = Pipe()
    let output = Pipe()
    var pending: [UInt8] = []

    static let script = """
        import asyncio, sys, time, json
        from qemu.qmp import QMPClient
        async def main():
            print('ready', flush=True)
            for line in sys.stdin:
                n = int(line)
                qmp = QMPClient('bench')
                await qmp.connect(sys.argv[1])
                for _ in range(int(sys.argv[2])):
                    await qmp.execute('query-status')
                lat = []
                cpu = time.process_time_ns()
                start = time.perf_counter_ns()
                for _ in range(n):
                    t = time.perf_counter_ns()
                    await qmp.execute('query-status')
                    lat.append(time.perf_counter_ns() - t)
                total = time.perf_counter_ns() - start
                cpu = time.process_time_ns() - cpu
                await qmp.disconnect()
                print(json.dumps({"total": total, "cpu": cpu, "latencies": lat}), flush=True)
        asyncio.run(main())
        """

    /// nil when python3 or qemu.qmp is missing.
    init?(path: String) {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", Self.script, path, String(warmUp)]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil, readLine() == Array("ready".utf8) else {
            if process.isRunning { process.terminate() }
            return nil
        }
    }

    func run(_ n: Int) async throws -> LatencySamples {
        input.fileHandleForWriting.write(Data("\(n)\n".utf8))
        guard let line = readLine(), let reply = try? JSONValue.parse(line), let total = reply["total"]?.int64Value,
            let latencies = reply["latencies"]?.arrayValue
        else { throw BenchError("qemu.qmp client stopped answering") }
        var samples = LatencySamples()
        samples.nanoseconds = latencies.compactMap { $0.uint64Value }
        samples.total = .nanoseconds(total)
        samples.cpu = .nanoseconds(reply["cpu"]?.int64Value ?? 0)
        return samples
    }

    private func readLine() -> [UInt8]? {
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                let line = Array(pending[..<newline])
                pending.removeFirst(newline + 1)
                return line
            }
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { return nil }
            pending += chunk
        }
    }

    func close() async {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}
