import Foundation
import LabCore
import Platform
import QMP

/// `qlab-bench revert --passthrough FAST_HOST,LOADVM_HOST [--runs N] [--memory 64M,256M] [--mappings private,copy,premade] [--disk FILE] [--qlab PATH]`:
/// the revert of a lab with a passed-through card (`attach: hotplug`), `fast`
/// next to `loadvm`, run where vfio is real (the nested bench's L1: scenario
/// `revert-passthrough`, docs/nested-bench.md; issue 20).
///
/// For each memory size two labs come up, one `revert: fast` with the card
/// FAST_HOST, one `revert: loadvm` with LOADVM_HOST (one card serves one QEMU,
/// and qlab refuses two labs on one card; both are lsi53c895a in L1). The guest
/// runs firmware only, so its RAM is made dirty from outside before the
/// snapshot, 150 MiB of random data at 16 MiB in 256 MiB (as `revert --dirty`):
/// in the fast lab written into its live RAM file (mapped `share=on`, so the
/// guest sees it); in the loadvm lab by QEMU's generic `loader` device, which
/// writes the data into guest RAM at every reset, so that lab pays one more
/// write of it per cycle (the reset that completes the unplug): a bias in
/// the fast method's favour (a loader in the fast lab would instead be read
/// again by every new QEMU). Snapshot
/// `qlab-ready` is saved with the card unplugged; then every cycle (timed) is
/// `LabSession.revert` attaching the card (the loadvm lab unplugs it with a
/// reset first; the fast lab's card goes with the old QEMU), then `query-pci`
/// until it lists the card: the card answers. Methods interleaved, the order
/// rotating, one untimed round first.
///
/// The fast lab is reverted in each of `--mappings` ways, interleaved with
/// the rest (``RAMImageMapping``): `private` (qlab's: the image mapped
/// copy-on-write, which vfio's pin copies page by page), `copy` (a copy of
/// the image's data made during the revert, mapped `share=on`: pinned in
/// place) and `premade` (the same copy made before the cycle, untimed, as
/// it would be made while the previous test runs).
enum PassthroughRevertBench {
    static let tag = "qlab-ready"
    /// Where the dirty data goes in guest RAM: above what SeaBIOS uses low, below its tables at the top.
    static let dirtyOffset = 16 << 20
    static let usage = "usage: qlab-bench revert --passthrough FAST_HOST,LOADVM_HOST [--runs N] [--memory 64M,256M] [--mappings private,copy,premade] [--disk FILE] [--qlab PATH]"

    static func run(arguments: [String]) async throws {
        var runs = 5
        var memories = ["64M", "256M"]
        var hosts: [String] = []
        var mappings = RAMImageMapping.allCases
        var disk = "images/out/linux/disk.qcow2"
        var qlabPath = BenchProcess.siblingExecutable("qlab")
        var index = 0
        while index < arguments.count {
            let value = index + 1 < arguments.count ? arguments[index + 1] : ""
            switch arguments[index] {
            case "--passthrough": hosts = value.split(separator: ",").map(String.init)
            case "--runs": runs = try LifecycleBench.positive(value, "--runs")
            case "--memory": memories = value.split(separator: ",").map(String.init)
            case "--mappings":
                mappings = try value.split(separator: ",").map { name in
                    guard let mapping = RAMImageMapping(rawValue: String(name)) else {
                        throw BenchError("--mappings \(name): not a mapping (" + RAMImageMapping.allCases.map(\.rawValue).joined(separator: ", ") + ")")
                    }
                    return mapping
                }
            case "--disk": disk = value
            case "--qlab": qlabPath = value
            default: throw BenchError("unknown option \(arguments[index]); " + usage)
            }
            index += 2
        }
        guard hosts.count == 2, hosts.allSatisfy({ PCIAddress($0) != nil }) else {
            throw BenchError("--passthrough needs two host PCI addresses bound to vfio-pci, in different IOMMU groups (the fast lab's card, the loadvm lab's); " + usage)
        }
        guard access(qlabPath, X_OK) == 0 else {
            throw BenchError("no qlab executable at \(qlabPath) (it runs the supervisor): build it or pass --qlab PATH")
        }
        guard access(disk, R_OK) == 0 else { throw BenchError("no guest disk at \(disk): run images/build.sh, or pass --disk FILE") }
        let directory = try BenchProcess.makeTemporaryDirectory("revert-passthrough")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        ThisProcess.setEnvironment("QLAB_RUNTIME_DIR", directory + "/run")
        ThisProcess.setEnvironment("QLAB_STATE_DIR", directory + "/state")
        print("qlab-bench revert --passthrough: \(runs) timed reverts per method and memory size; fast (mapping the RAM image \(mappings.map(\.rawValue).joined(separator: ", "))): card \(hosts[0]), loadvm: card \(hosts[1]); methods interleaved, order rotating")
        var ratios: [(String, Double)] = []
        for memory in memories {
            guard let size = ByteSize(parsing: memory) else { throw BenchError("--memory \(memory): not a size (e.g. 64M, 256M)") }
            let dirtyMiB = Int(size.mebibytes) * 150 / 256
            let blob = directory + "/dirty-\(dirtyMiB)M.bin"
            try writeRandom(blob, mebibytes: dirtyMiB)
            let controller = LabController(supervisorExecutable: qlabPath)
            let suffix = memory.lowercased().filter { $0.isLetter || $0.isNumber }
            let plans = [("fast", hosts[0]), ("loadvm", hosts[1])].map { (method: $0.0, host: $0.1, name: "bench-pt-\($0.0)-" + suffix) }
            var labs: [Method] = []
            var variants: [Variant] = []
            func takeDown() async {
                for lab in labs { lab.close() }
                for plan in plans {
                    _ = try? await controller.down(plan.name)
                    BenchProcess.forceDown(controller.runtime(plan.name))
                }
            }
            do {
                for plan in plans {
                    let file = directory + "/\(plan.name).yaml"
                    try writeLab(file, name: plan.name, memory: memory, method: plan.method, host: plan.host, disk: FileSystem.absolute(disk),
                                 blob: plan.method == "loadvm" ? blob : nil)
                    let lab = try await Method.boot(plan.method, file: file, name: plan.name, controller: controller, dirtyMiB: dirtyMiB, blob: blob)
                    labs.append(lab)
                    if plan.method == "fast" {
                        variants += mappings.map { Variant(lab: lab, mapping: $0) }
                    } else {
                        variants.append(Variant(lab: lab, mapping: nil))
                    }
                }
                try await TimedCycles.interleaved(variants, runs: runs) { try await $0.cycle(timed: $1) }
            } catch {
                await takeDown()
                throw error
            }
            print("")
            for variant in variants {
                print(String(format: "  %@ %@ revert + plug until query-pci lists the card: median %.1f ms, p90 %.1f ms (%@)",
                             memory, variant.label.padding(toLength: 12, withPad: " ", startingAt: 0), variant.cycles.median, variant.cycles.p90, variant.cycles.via))
                print("    steps, median ms: \(variant.cycles.stepLine)")
            }
            if let loadvm = variants.first(where: { $0.mapping == nil }) {
                for variant in variants where variant.mapping != nil {
                    let ratio = variant.cycles.median / loadvm.cycles.median
                    // The line the nested scenario looks for: qlab's own fast revert (private) against loadvm.
                    if variant.mapping == .privateMap { ratios.append((memory, ratio)) }
                    let name = variant.mapping == .privateMap ? "fast" : variant.label
                    print(String(format: "ratio %@/loadvm %@ (%d MiB dirty), passthrough: %.3f", name, memory, dirtyMiB, ratio))
                }
            }
            await takeDown()
            try? FileManager.default.removeItem(atPath: blob)
        }
        print("")
        print("summary: " + ratios.map { String(format: "%@ fast/loadvm %.3f", $0.0, $0.1) }.joined(separator: "; ")
              + "; faster: " + (ratios.allSatisfy { $0.1 < 1 } ? "fast" : ratios.allSatisfy { $0.1 >= 1 } ? "loadvm" : "mixed"))
    }

    /// `mebibytes` MiB from /dev/urandom (no page of it is zero, so a snapshot keeps every page).
    static func writeRandom(_ path: String, mebibytes: Int) throws {
        guard let random = FileHandle(forReadingAtPath: "/dev/urandom") else { throw BenchError("cannot open /dev/urandom") }
        defer { try? random.close() }
        guard FileManager.default.createFile(atPath: path, contents: nil) else { throw BenchError("cannot create \(path)") }
        guard let out = FileHandle(forWritingAtPath: path) else { throw BenchError("cannot write \(path)") }
        defer { try? out.close() }
        for _ in 0..<mebibytes { try out.write(contentsOf: random.readData(ofLength: 1 << 20)) }
    }

    /// Writes `source` into the file `target` at `offset` (guest RAM, when `target` is a live RAM file).
    static func copy(_ source: String, into target: String, at offset: Int) throws {
        guard let input = FileHandle(forReadingAtPath: source), let output = FileHandle(forWritingAtPath: target) else {
            throw BenchError("cannot copy \(source) into \(target)")
        }
        defer { try? input.close(); try? output.close() }
        try output.seek(toOffset: UInt64(offset))
        while true {
            let chunk = input.readData(ofLength: 4 << 20)
            if chunk.isEmpty { break }
            try output.write(contentsOf: chunk)
        }
    }

    /// A firmware-only q35 guest with the card hotplugged; with `blob`, QEMU's loader writes it into RAM at 16 MiB.
    static func writeLab(_ path: String, name: String, memory: String, method: String, host: String, disk: String, blob: String?) throws {
        let loader = blob.map { ["qemu_args:", "  - -device", "  - " + BenchLabFile.quoted("loader,file=\($0),addr=0x\(String(dirtyOffset, radix: 16)),force-raw=on")] } ?? []
        try BenchLabFile.write(path, [
            "name: \(name)",
            "machine:",
            "  type: q35",
            "  accel: tcg",
            "  memory: \(memory)",
            "  smp: 1",
            "devices:",
            "  card:",
            "    passthrough: {host: \"\(host)\", rombar: false}",
            "    attach: hotplug",
            "guests:",
            "  firmware:",
            "    os: linux",
            "    disk: \(BenchLabFile.quoted(disk))",
            "    boot_timeout: 60s",
            "revert: \(method)",
        ] + loader)
        try Lab.load(path: path).checkFiles()
    }

    /// One lab (one method) with its session.
    final class Method: @unchecked Sendable {
        let name: String
        let method: String
        let session: LabSession

        init(name: String, method: String, session: LabSession) {
            self.name = name
            self.method = method
            self.session = session
        }

        static func boot(_ method: String, file: String, name: String, controller: LabController, dirtyMiB: Int, blob: String) async throws -> Method {
            let clock = ContinuousClock()
            let up = try await controller.up(labFile: file, options: LabController.UpOptions(freshDisk: true))
            guard up.record.revert?.method.rawValue == method else {
                throw BenchError("\(name): asked for revert: \(method), the plan chose \(up.record.revert?.reason ?? "nothing")")
            }
            let session = try await LabSession.open(runtime: controller.runtime(name))
            let lab = Method(name: name, method: method, session: session)
            // SeaBIOS numbers the bridge's bus; until then query-pci cannot see behind it, and the snapshot would hold an unnumbered bridge.
            try await lab.waitForBridge()
            if method == "fast" {
                guard let live = up.record.revert?.liveFile else { throw BenchError("\(name): no live RAM file") }
                try PassthroughRevertBench.copy(blob, into: live, at: PassthroughRevertBench.dirtyOffset)
            }
            let start = clock.now
            let save = try await session.saveSnapshot(tag, options: SnapshotOptions(replace: true))
            print(String(format: "%@: %@ (%@), %d MiB random data in guest RAM (%@); %@ saved in %.0f ms (%@)",
                         name, method, up.record.revert?.reason ?? "?", dirtyMiB, method == "fast" ? "written into its live RAM file" : "loader", tag, (clock.now - start).seconds * 1000, save.via))
            return lab
        }

        func waitForBridge() async throws {
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline {
                let reply = try await session.qmp.execute("query-pci")
                if PassthroughRevertBench.bridgeNumbered(reply) { return }
                try await Task.sleep(for: .milliseconds(200))
            }
            throw BenchError("\(name): the firmware did not number qlab-pcibr0's bus within 60 s")
        }

        func close() { session.close() }
    }

    /// One way of reverting: the loadvm lab, or the fast lab with one RAM image mapping; its timed cycles.
    final class Variant: @unchecked Sendable {
        let lab: Method
        /// nil: the loadvm lab.
        let mapping: RAMImageMapping?
        var cycles = TimedCycles()

        init(lab: Method, mapping: RAMImageMapping?) {
            self.lab = lab
            self.mapping = mapping
        }

        /// `loadvm`, `fast` (private), `fast-copy`, `fast-premade`.
        var label: String {
            guard let mapping else { return lab.method }
            return mapping == .privateMap ? "fast" : "fast-" + mapping.rawValue
        }

        /// Revert, plug the card, until query-pci lists it (timed). A premade
        /// copy is made first, untimed (it would be made while the previous test runs).
        func cycle(timed: Bool) async throws {
            let session = lab.session
            if mapping == .premade { _ = try session.premakeRAMCopy(tag) }
            let begin = ContinuousClock.now
            let result = try await session.revert(to: tag, attaching: ["card"], mapping: mapping ?? .privateMap)
            let reverted = ContinuousClock.now
            let deadline = reverted + .seconds(60)
            while true {
                let reply = try await session.qmp.execute("query-pci")
                if PassthroughRevertBench.listsCard(reply) { break }
                guard ContinuousClock.now < deadline else { throw BenchError("\(lab.name) (\(label)): query-pci did not list the card within 60 s of the revert") }
                try await Task.sleep(for: .milliseconds(5))
            }
            let end = ContinuousClock.now
            guard timed else { return }
            // Per-step names carry pids and paths; keep the part before them.
            let named = result.timings.steps.map { step in
                (step.name.split(separator: "(").first.map { String($0).trimmingCharacters(in: .whitespaces) } ?? step.name, step.duration)
            }
            cycles.record(end - begin, via: result.via, steps: named + [("until query-pci lists the card", end - reverted)])
        }
    }

    /// `query-pci` shows a device with qdev_id `card` (behind qlab's bridge).
    static func listsCard(_ reply: JSONValue) -> Bool {
        func search(_ devices: [JSONValue]) -> Bool {
            devices.contains { $0["qdev_id"]?.stringValue == "card" || search($0["pci_bridge"]?["devices"]?.arrayValue ?? []) }
        }
        return (reply.arrayValue ?? []).contains { search($0["devices"]?.arrayValue ?? []) }
    }

    /// `query-pci` shows qlab-pcibr0 with a secondary bus number (the firmware has run).
    static func bridgeNumbered(_ reply: JSONValue) -> Bool {
        (reply.arrayValue ?? []).contains { bus in
            (bus["devices"]?.arrayValue ?? []).contains { $0["qdev_id"]?.stringValue == "qlab-pcibr0" && ($0["pci_bridge"]?["bus"]?["secondary"]?.intValue ?? 0) > 0 }
        }
    }
}
