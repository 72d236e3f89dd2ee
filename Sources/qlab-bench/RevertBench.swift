import Foundation
// Glibc: the floor qlab is measured against drives QEMU and its sockets with raw posix_spawn, waitpid, read and
// write, on purpose: no qlab layer between the benchmark and the system (see the hand and floor columns).
import LabCore
import Platform
import QMP

/// `qlab-bench revert [--runs N] [--memory 256M,1G] [--lab FILE] [--qlab PATH]`:
/// the test loop's revert cycle for the test guest, next to the floor, per memory size
/// (`revert: loadvm`, the floor's method). `--dirty`: ``DirtyRevertBench``;
/// `--passthrough`: ``PassthroughRevertBench``.
///
/// Each memory size boots the lab's guest once (a copy of the lab file with
/// `memory:` changed and paths made absolute, in a temporary QLAB_RUNTIME_DIR
/// and QLAB_STATE_DIR), waits for it, saves snapshot `qlab-ready` with the
/// cards unplugged, and then runs cycles, the kinds interleaved with the
/// order rotating every round. Every timed cycle starts with both cards
/// attached by the cycle before (one untimed warm-up of each kind first).
///
/// - qlab: `LabSession.revert(to:)` (unplug with device_del + system_reset,
///   the snapshot-load job, fresh overlays, blockdev-add, device_add, lab
///   record), then the guest's `rescan` command over `GuestConsole.run` until
///   the disks are there. `qlab+pref` is the same with the revert inside
///   `QMPClient.withPreferredExecutor`.
/// - floor: the same QEMU work over a raw QMP socket with no qlab logic,
///   every command serialised before the clock starts: device_del of each
///   card, system_reset, DEVICE_DELETED of each card, blockdev-del of each
///   disk's format and file node (again after 1 ms while QEMU answers "in
///   use"), snapshot-load (same tag, vmstate node and node list) until
///   JOB_STATUS_CHANGE concluded, job-dismiss, blockdev-add of each node over
///   one overlay per disk made once (no fresh overlay per cycle: that part is
///   qlab's), device_add of each card and its scsi-hd; then the same rescan
///   command typed on a raw console socket, `; echo` an end marker, read until it.
///
/// Both sides take turns on QEMU's one user QMP monitor and its one console;
/// connecting is not timed.
enum RevertBench {
    static let tag = "qlab-ready"

    static func run(arguments: [String]) async throws {
        if arguments.contains("--passthrough") {
            try await PassthroughRevertBench.run(arguments: arguments)
            return
        }
        if arguments.contains("--dirty") {
            try await DirtyRevertBench.run(arguments: arguments.filter { $0 != "--dirty" })
            return
        }
        var runs = 10
        var memories = ["256M", "1G"]
        var labPath = "labs/emulated-scsi.yaml"
        var qlabPath = BenchProcess.siblingExecutable("qlab")
        var index = 0
        while index < arguments.count {
            let value = index + 1 < arguments.count ? arguments[index + 1] : ""
            switch arguments[index] {
            case "--runs": runs = try LifecycleBench.positive(value, "--runs")
            case "--memory": memories = value.split(separator: ",").map(String.init)
            case "--lab": labPath = value
            case "--qlab": qlabPath = value
            default:
                throw BenchError("unknown option \(arguments[index]); usage: qlab-bench revert [--runs N] [--memory 256M,1G] [--lab FILE] [--qlab PATH]")
            }
            index += 2
        }
        guard access(qlabPath, X_OK) == 0 else {
            throw BenchError("no qlab executable at \(qlabPath) (it runs the supervisor): build it (swift build --product qlab) or pass --qlab PATH")
        }
        guard let labText = try? String(contentsOfFile: labPath, encoding: .utf8) else {
            throw BenchError("cannot read \(labPath): run from the repository root or pass --lab FILE")
        }
        let directory = try BenchProcess.makeTemporaryDirectory("revert")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        setenv("QLAB_RUNTIME_DIR", directory + "/run", 1)
        setenv("QLAB_STATE_DIR", directory + "/state", 1)
        print("qlab-bench revert: \(runs) timed cycles per kind and memory size; lab \(labPath); kinds interleaved, order rotating")

        for memory in memories {
            let name = "bench-revert-" + memory.lowercased().filter { $0.isLetter || $0.isNumber }
            let labFile = directory + "/\(name).yaml"
            try writeLab(labText, from: labPath, to: labFile, name: name, memory: memory)
            let controller = LabController(supervisorExecutable: qlabPath)
            let runtime = controller.runtime(name)
            do {
                try await bench(controller: controller, runtime: runtime, labFile: labFile, memory: memory, runs: runs, directory: directory)
            } catch {
                _ = try? await controller.down(name)
                BenchProcess.forceDown(runtime)
                throw error
            }
            _ = try? await controller.down(name)
            BenchProcess.forceDown(runtime)
        }
    }

    /// The lab file with another name and memory size, its relative paths made absolute.
    /// `revert`: the lab's `revert:` method (this bench's floor is QEMU's loadvm in place, so `loadvm` by default).
    static func writeLab(_ text: String, from labPath: String, to path: String, name: String, memory: String, revert: String = "loadvm") throws {
        let labDirectory = (FileSystem.absolute(labPath) as NSString).deletingLastPathComponent
        var lines: [String] = []
        var named = false, sized = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            let trimmed = line.drop { $0 == " " }
            let indent = String(line.prefix(line.count - trimmed.count))
            if indent.isEmpty && trimmed.hasPrefix("name:") {
                lines.append("name: \(name)")
                named = true
            } else if !indent.isEmpty && trimmed.hasPrefix("memory:") && !sized {
                lines.append(indent + "memory: \(memory)")
                sized = true
            } else {
                lines.append(line.replacingOccurrences(of: "../", with: (labDirectory as NSString).deletingLastPathComponent + "/"))
            }
        }
        guard named, sized else { throw BenchError("\(labPath): expected a top-level `name:` and a `memory:` under machine") }
        lines.append("revert: \(revert)")
        try BenchLabFile.write(path, lines)
        let lab = try Lab.load(path: path)
        try lab.checkFiles()
    }

    struct Cycles {
        var qmp: [Double] = []
        var guest: [Double] = []
        var total: [Double] = []
        /// Milliseconds per cycle of each group of QMP-side steps.
        var steps: [String: [Double]] = [:]
        var stepOrder: [String] = []

        mutating func add(qmp: Duration, guest: Duration, steps: [(String, Duration)]) {
            self.qmp.append(qmp.seconds * 1000)
            self.guest.append(guest.seconds * 1000)
            total.append((qmp + guest).seconds * 1000)
            var sums: [String: Double] = [:]
            for (group, duration) in steps {
                if sums[group] == nil && !stepOrder.contains(group) { stepOrder.append(group) }
                sums[group, default: 0] += duration.seconds * 1000
            }
            let accounted = sums.values.reduce(0, +)
            if !steps.isEmpty {
                sums["between steps", default: 0] += max(0, qmp.seconds * 1000 - accounted)
                if !stepOrder.contains("between steps") { stepOrder.append("between steps") }
            }
            for (group, value) in sums { self.steps[group, default: []].append(value) }
        }

        var stepLine: String {
            stepOrder.map { String(format: "%@ %.1f", $0, Self.median(steps[$0] ?? [])) }.joined(separator: ", ")
        }

        /// The steps of a ``RevertResult`` in groups that the floor's phases can be set against.
        static func groups(_ timings: StepTimings) -> [(String, Duration)] {
            timings.steps.map { step in
                let name = step.name
                let group: String
                if name.contains("device_del") || name.contains("system_reset") || name.contains("DEVICE_DELETED") {
                    group = "unplug"
                } else if name.contains("qom-list") || name.contains("query-pci") || name.contains("query-status") {
                    group = "checks"
                } else if name.contains("blockdev-del") {
                    group = "blockdev-del"
                } else if name.contains("snapshot-load") || name.contains("loadvm") {
                    group = "load"
                } else if name.contains("overlay") {
                    group = "overlay"
                } else if name.contains("blockdev-add") || name.contains("device_add") {
                    group = "attach"
                } else if name.contains("record") {
                    group = "record"
                } else {
                    group = "other"
                }
                return (group, step.duration)
            }
        }

        static func median(_ values: [Double]) -> Double { LifecycleBench.Samples.Series(values).median }
        static func p90(_ values: [Double]) -> Double { LifecycleBench.Samples.Series(values).percentile(0.9) }

        func line(_ label: String) -> String {
            label.padding(toLength: 10, withPad: " ", startingAt: 0)
                + String(format: "cycle median %7.1f p90 %7.1f ms   QMP part median %7.1f p90 %7.1f ms   guest rescan median %7.1f p90 %7.1f ms",
                         Self.median(total), Self.p90(total), Self.median(qmp), Self.p90(qmp), Self.median(guest), Self.p90(guest))
        }
    }

    static func bench(controller: LabController, runtime: LabRuntime, labFile: String, memory: String, runs: Int, directory: String) async throws {
        let clock = ContinuousClock()
        var start = clock.now
        let up = try await controller.up(labFile: labFile, options: LabController.UpOptions(freshDisk: true))
        var session = try await LabSession.open(runtime: runtime)
        let guest = try session.guest
        guard let rescan = guest.effectiveRescan else { throw BenchError("the guest has no rescan command") }
        var console: GuestConsole? = try GuestConsole.connect(runtime: runtime)
        try await console!.waitForReady(guest)
        let booted = clock.now - start
        start = clock.now
        let save = try await session.saveSnapshot(tag, options: SnapshotOptions(replace: true))
        let saved = clock.now - start
        print("")
        print(String(format: "memory %@ (%@, QEMU pid %d): booted to the shell in %.1f s; %@ saved in %.0f ms",
                     memory, up.record.accel.accelerator.rawValue, up.record.qemuPID, booted.seconds, save.via, saved.seconds * 1000))

        let devices = try session.hotplugDeviceNames()
        let floor = try await FloorPlan(session: session, devices: devices, tag: tag, rescan: rescan, directory: directory)
        var rawQMP: RawQMPClient?
        var rawConsole: RawConsole?

        enum Kind: Int, CaseIterable { case qlab, qlabPreferred, floor }
        var results: [Kind: Cycles] = [:]
        var cycleNumber = 0
        for round in -1..<runs {
            let kinds = Kind.allCases.indices.map { Kind.allCases[(($0 + max(0, round)) % Kind.allCases.count)] }
            for kind in kinds {
                cycleNumber += 1
                var qmpTime = Duration.zero, guestTime = Duration.zero
                var steps: [(String, Duration)] = []
                switch kind {
                case .qlab, .qlabPreferred:
                    if console == nil {
                        rawQMP = nil
                        rawConsole = nil
                        session = try await LabSession.open(runtime: runtime)
                        console = try GuestConsole.connect(runtime: runtime)
                        guard try await console!.probe() else { throw BenchError("the guest console does not answer") }
                    }
                    let begin = clock.now
                    let revert: RevertResult
                    if kind == .qlabPreferred {
                        let current = session
                        revert = try await current.qmp.withPreferredExecutor { try await current.revert(to: tag) }
                    } else {
                        revert = try await session.revert(to: tag)
                    }
                    steps = Cycles.groups(revert.timings)
                    let reverted = clock.now
                    let result = try await console!.run(rescan, timeout: .seconds(60))
                    guard result.exitStatus == 0 else { throw BenchError("qlab cycle: rescan exited \(result.exitStatus): \(result.output)") }
                    qmpTime = reverted - begin
                    guestTime = clock.now - reverted
                case .floor:
                    if rawQMP == nil {
                        session.close()
                        console?.close()
                        console = nil
                        rawQMP = try connectRaw { try RawQMPClient(path: runtime.qmpSocketPath) }
                        rawConsole = try connectRaw { try RawConsole(path: runtime.consoleSocketPath) }
                        try rawConsole!.run("true", number: 0)
                    }
                    let job = try floor.jobCommands(number: cycleNumber)
                    let begin = clock.now
                    steps = try floor.cycle(rawQMP!, job: job)
                    let reverted = clock.now
                    try rawConsole!.run(rescan, number: cycleNumber)
                    qmpTime = reverted - begin
                    guestTime = clock.now - reverted
                }
                if round >= 0 { results[kind, default: Cycles()].add(qmp: qmpTime, guest: guestTime, steps: steps) }
            }
        }
        rawQMP = nil
        rawConsole = nil
        session.close()
        console?.close()

        let qlab = results[.qlab]!, preferred = results[.qlabPreferred]!, floorCycles = results[.floor]!
        print(qlab.line("qlab"))
        print(preferred.line("qlab+pref"))
        print(floorCycles.line("floor"))
        let ratio = Cycles.median(qlab.total) / Cycles.median(floorCycles.total)
        print(String(format: "ratio qlab/floor: %.2f", ratio))
        print("  QMP part by step, median ms: qlab: \(qlab.stepLine)")
        print("                                floor: \(floorCycles.stepLine)")
        print(String(format: "  memory %@: QMP part alone %.2f; with withPreferredExecutor %.2f (QMP part %.2f); target 1.2 or less",
                     memory, Cycles.median(qlab.qmp) / Cycles.median(floorCycles.qmp),
                     Cycles.median(preferred.total) / Cycles.median(floorCycles.total),
                     Cycles.median(preferred.qmp) / Cycles.median(floorCycles.qmp)))
        func perHour(_ cycles: Cycles) -> Double { 3600 / (Cycles.median(cycles.total) / 1000 + 5) }
        print(String(format: "  runs per hour with a 5-second test: qlab %.0f, floor %.0f", perHour(qlab), perHour(floorCycles)))
    }

    /// Retries `make` for a few seconds: QEMU accepts the next client of a
    /// socket in its main loop, a moment after the last one left.
    static func connectRaw<T>(_ make: () throws -> T) throws -> T {
        let deadline = ContinuousClock.now + .seconds(5)
        while true {
            do { return try make() } catch {
                if ContinuousClock.now > deadline { throw error }
                usleep(2000)
            }
        }
    }
}

/// Everything the floor sends, serialised before any clock starts.
struct FloorPlan {
    let devices: [String]
    let deviceDel: [[UInt8]]
    /// Format node, then file node, per disk.
    let nodes: [String]
    let blockdevDel: [[UInt8]]
    let blockdevAdd: [[UInt8]]
    let deviceAdd: [[UInt8]]
    let systemReset: [UInt8]
    let tag: String
    let vmstate: String
    let snapshotNodes: [String]
    let rescan: String

    init(session: LabSession, devices: [String], tag: String, rescan: String, directory: String) async throws {
        self.devices = devices
        self.tag = tag
        self.rescan = rescan
        let guest = try session.guest
        var nodes: [String] = [], blockdevAdd: [[UInt8]] = [], deviceAdd: [[UInt8]] = []
        for name in devices {
            guard let device = session.lab.device(named: name) else { throw BenchError("no device \(name)") }
            var overlays: [String: String] = [:]
            for disk in device.emulated?.disks ?? [] where disk.usesOverlay {
                let overlay = directory + "/floor-\(session.lab.name)-\(disk.id).qcow2"
                try BenchProcess.runTool(["qemu-img", "create", "-q", "-f", "qcow2", "-F", disk.format, "-b", disk.image, overlay])
                overlays[disk.id] = overlay
            }
            for disk in device.emulated?.disks ?? [] { nodes += [disk.formatNodeName, disk.fileNodeName] }
            let attachment = try session.lab.attachment(of: name, for: guest, diskOverlays: overlays)
            blockdevAdd += try attachment.blockdevs.map { try Self.command("blockdev-add", value: $0.blockdevAddArguments) }
            deviceAdd += try attachment.devices.map { try Self.command("device_add", value: $0.deviceAddArguments) }
        }
        self.nodes = nodes
        self.blockdevAdd = blockdevAdd
        self.deviceAdd = deviceAdd
        deviceDel = try devices.map { try Self.command("device_del", ["id": .string($0)]) }
        blockdevDel = try nodes.map { try Self.command("blockdev-del", ["node-name": .string($0)]) }
        systemReset = try Self.command("system_reset", nil)
        // The writable qcow2 nodes while no card is attached: the guest disk (and firmware vars).
        let reply = try await session.qmp.execute("query-named-block-nodes", arguments: ["flat": true])
        let all = (reply.arrayValue ?? []).filter { $0["drv"]?.stringValue == "qcow2" && $0["ro"]?.boolValue == false }
            .compactMap { $0["node-name"]?.stringValue }
            .filter { !nodes.contains($0) }
        guard !all.isEmpty else { throw BenchError("no writable qcow2 node for the snapshot") }
        snapshotNodes = all
        vmstate = all.contains(QEMUCommandLine.IDs.diskFormatNode) ? QEMUCommandLine.IDs.diskFormatNode : all[0]
    }

    static func command(_ name: String, _ arguments: JSONObject?) throws -> [UInt8] {
        var object: JSONObject = ["execute": .string(name)]
        if let arguments { object["arguments"] = .object(arguments) }
        return Array(try JSONValue.object(object).jsonString().utf8) + [0x0A]
    }

    static func command(_ name: String, value arguments: JSONValue) throws -> [UInt8] {
        guard case .object(let object) = arguments else { throw BenchError("\(name): arguments are not an object") }
        return try command(name, object)
    }

    struct JobCommands {
        var id: String
        var load: [UInt8]
        var dismiss: [UInt8]
    }

    /// snapshot-load and job-dismiss with a job id of their own.
    func jobCommands(number: Int) throws -> JobCommands {
        let id = "floor-load-\(number)"
        let load = try Self.command("snapshot-load", [
            "job-id": .string(id), "tag": .string(tag), "vmstate": .string(vmstate),
            "devices": .array(snapshotNodes.map(JSONValue.string)),
        ])
        return JobCommands(id: id, load: load, dismiss: try Self.command("job-dismiss", ["id": .string(id)]))
    }

    /// One floor cycle over `client` (the cards attached on entry); returns its phases' times.
    func cycle(_ client: RawQMPClient, job: JobCommands) throws -> [(String, Duration)] {
        var events: [JSONValue] = []
        var phases: [(String, Duration)] = []
        var start = ContinuousClock.now
        func phase(_ name: String) {
            phases.append((name, ContinuousClock.now - start))
            start = ContinuousClock.now
        }
        for line in deviceDel { try client.call(line, events: &events) }
        try client.call(systemReset, events: &events)
        for device in devices {
            try client.waitForEvent("DEVICE_DELETED", events: &events) { $0["device"]?.stringValue == device }
        }
        phase("unplug")
        for line in blockdevDel {
            while true {
                do {
                    try client.call(line, events: &events)
                    break
                } catch let error as FloorError where error.message.contains("is in use") {
                    usleep(1000)
                }
            }
        }
        phase("blockdev-del")
        try client.call(job.load, events: &events)
        try client.waitForEvent("JOB_STATUS_CHANGE", events: &events) { $0["id"]?.stringValue == job.id && $0["status"]?.stringValue == "concluded" }
        try client.call(job.dismiss, events: &events)
        phase("load")
        for line in blockdevAdd { try client.call(line, events: &events) }
        for line in deviceAdd { try client.call(line, events: &events) }
        phase("attach")
        return phases
    }
}

struct FloorError: Error, CustomStringConvertible {
    var message: String
    var description: String { "floor: QEMU answered: \(message)" }
}

extension RawQMPClient {
    /// The next line, `poll(2)` then `read(2)`; fails after `timeout`.
    func nextLine(timeout: Duration = .seconds(60)) throws -> [UInt8] {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                let line = Array(pending[..<newline])
                pending.removeFirst(newline + 1)
                return line
            }
            let left = ContinuousClock.now.duration(to: deadline)
            guard left > .zero else { throw BenchError("floor: QEMU sent nothing for \(timeout)") }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, Int32(left.seconds * 1000) + 1) <= 0 { continue }
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { throw BenchError("floor: QMP connection closed") }
            pending.append(contentsOf: buffer[0..<n])
        }
    }

    /// Sends a serialised command; returns at its reply, keeping events that came first.
    func call(_ line: [UInt8], events: inout [JSONValue]) throws {
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        while true {
            let message = try JSONValue.parse(try nextLine())
            if message["event"] != nil {
                events.append(message)
                continue
            }
            if let error = message["error"] { throw FloorError(message: error["desc"]?.stringValue ?? "\(error)") }
            return
        }
    }

    /// Waits for event `name` whose data satisfies `matches`, looking at the kept events first.
    func waitForEvent(_ name: String, events: inout [JSONValue], matches: (JSONValue) -> Bool) throws {
        func hit(_ event: JSONValue) -> Bool { event["event"]?.stringValue == name && matches(event["data"] ?? .null) }
        if let index = events.firstIndex(where: hit) {
            events.remove(at: index)
            return
        }
        while true {
            let message = try JSONValue.parse(try nextLine())
            if hit(message) { return }
            if message["event"] != nil { events.append(message) }
        }
    }
}

/// The floor's console: a bare socket, the command typed with an end marker after it.
final class RawConsole {
    let fd: Int32
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)

    init(path: String) throws {
        fd = try UnixSocket.connect(path: path)
    }

    deinit { close(fd) }

    /// Types `command; echo FLOOR""END-N-$?` and reads until `FLOOREND-N-`
    /// and the status after it; fails unless the status is 0.
    func run(_ command: String, number: Int, timeout: Duration = .seconds(60)) throws {
        let line = Array("\(command); echo FLOOR\"\"END-\(number)-$?\n".utf8)
        received.removeAll(keepingCapacity: true)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let marker = Array("FLOOREND-\(number)-".utf8)
        let deadline = ContinuousClock.now + timeout
        while true {
            if let end = Self.find(marker, in: received), let newline = received[end...].firstIndex(of: 0x0A) {
                let status = String(decoding: received[end..<newline], as: UTF8.self).filter(\.isNumber)
                guard status == "0" else {
                    throw BenchError("floor: `\(command)` exited \(status): \(String(decoding: received.suffix(400), as: UTF8.self))")
                }
                return
            }
            let left = ContinuousClock.now.duration(to: deadline)
            guard left > .zero else { throw BenchError("floor: no end marker of `\(command)` within \(timeout)") }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, Int32(left.seconds * 1000) + 1) <= 0 { continue }
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { throw BenchError("floor: console closed") }
            received.append(contentsOf: buffer[0..<n])
        }
    }

    /// The index just past the first `needle` in `haystack`.
    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<start + needle.count].elementsEqual(needle) { return start + needle.count }
        }
        return nil
    }
}
