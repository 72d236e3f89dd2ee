import Foundation
import LabCore
import Platform
import QMP

/// `qlab-bench revert --dirty [--runs N] [--memory 1G,256M] [--lab FILE] [--qlab PATH]`:
/// stock `loadvm` next to the fast method with a guest whose RAM is mostly
/// dirty, as real guests' is (issue 12).
///
/// For each memory size two copies of the lab boot, one `revert: loadvm`,
/// one `revert: fast`. In each guest a tmpfs gets random data (800 MiB of a
/// 1 GiB guest, 150 MiB of 256 MiB) before snapshot `qlab-ready`; every
/// cycle first rewrites that data in the guest (untimed: the pages are
/// dirty again), then reverts (timed: `LabSession.revert`, no cards), then
/// checks the shell answers. The kinds are interleaved, the order rotating
/// each round, one untimed warm-up round first. /dev/shm holds at most the
/// fast guest's live RAM file and one RAM image at a time; everything goes
/// with the labs.
enum DirtyRevertBench {
    static let tag = "qlab-ready"

    static func run(arguments: [String]) async throws {
        var runs = 7
        var memories = ["1G", "256M"]
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
                throw BenchError("unknown option \(arguments[index]); usage: qlab-bench revert --dirty [--runs N] [--memory 1G,256M] [--lab FILE] [--qlab PATH]")
            }
            index += 2
        }
        guard access(qlabPath, X_OK) == 0 else {
            throw BenchError("no qlab executable at \(qlabPath) (it runs the supervisor): build it (swift build --product qlab) or pass --qlab PATH")
        }
        guard let labText = try? String(contentsOfFile: labPath, encoding: .utf8) else {
            throw BenchError("cannot read \(labPath): run from the repository root or pass --lab FILE")
        }
        let directory = try BenchProcess.makeTemporaryDirectory("revert-dirty")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        ThisProcess.setEnvironment("QLAB_RUNTIME_DIR", directory + "/run")
        ThisProcess.setEnvironment("QLAB_STATE_DIR", directory + "/state")
        print("qlab-bench revert --dirty: \(runs) timed reverts per method and memory size; lab \(labPath); methods interleaved, order rotating")
        for memory in memories {
            guard let size = ByteSize(parsing: memory) else { throw BenchError("--memory \(memory): not a size (e.g. 1G, 256M)") }
            let dirtyMiB = size.mebibytes >= 1024 ? Int(size.mebibytes) * 800 / 1024 : Int(size.mebibytes) * 150 / 256
            let controller = LabController(supervisorExecutable: qlabPath)
            var labs: [Method] = []
            do {
                for method in ["loadvm", "fast"] {
                    let name = "bench-dirty-\(method)-" + memory.lowercased().filter { $0.isLetter || $0.isNumber }
                    let file = directory + "/\(name).yaml"
                    try RevertBench.writeLab(labText, from: labPath, to: file, name: name, memory: memory, revert: method)
                    labs.append(try await Method.boot(method, file: file, name: name, controller: controller, dirtyMiB: dirtyMiB))
                }
                try await bench(labs, memory: memory, dirtyMiB: dirtyMiB, runs: runs)
            } catch {
                for lab in labs { lab.close() }
                for method in ["loadvm", "fast"] {
                    let name = "bench-dirty-\(method)-" + memory.lowercased().filter { $0.isLetter || $0.isNumber }
                    _ = try? await controller.down(name)
                    BenchProcess.forceDown(controller.runtime(name))
                }
                throw error
            }
            for lab in labs {
                lab.close()
                _ = try? await controller.down(lab.name)
                BenchProcess.forceDown(controller.runtime(lab.name))
            }
        }
    }

    /// One booted lab with its session and console.
    final class Method: @unchecked Sendable {
        let name: String
        let method: String
        let session: LabSession
        let console: GuestConsole
        let dirtyMiB: Int
        var reverts = TimedCycles()

        init(name: String, method: String, session: LabSession, console: GuestConsole, dirtyMiB: Int) {
            self.name = name
            self.method = method
            self.session = session
            self.console = console
            self.dirtyMiB = dirtyMiB
        }

        static func boot(_ method: String, file: String, name: String, controller: LabController, dirtyMiB: Int) async throws -> Method {
            let clock = ContinuousClock()
            var start = clock.now
            let up = try await controller.up(labFile: file, options: LabController.UpOptions(freshDisk: true))
            let runtime = controller.runtime(name)
            let session = try await LabSession.open(runtime: runtime)
            let console = try GuestConsole.connect(runtime: runtime)
            try await console.waitForReady(try session.guest)
            let booted = clock.now - start
            // A tmpfs of its own: the initramfs root is capped at half the RAM.
            start = clock.now
            let fill = try await console.run(
                "mkdir -p /mnt/dirty && mount -t tmpfs -o size=\(dirtyMiB + 16)m qlab-dirty /mnt/dirty && dd if=/dev/urandom of=/mnt/dirty/data bs=1M count=\(dirtyMiB) 2>&1 | tail -1",
                timeout: .seconds(900))
            guard fill.exitStatus == 0 else { throw BenchError("\(name): filling the guest's tmpfs failed: \(fill.output)") }
            let filled = clock.now - start
            start = clock.now
            let save = try await session.saveSnapshot(tag, options: SnapshotOptions(replace: true))
            print(String(format: "%@: %@ (%@), booted in %.1f s, %d MiB random data in guest tmpfs in %.1f s; %@ saved in %.0f ms (%@)",
                         name, method, up.record.revert?.reason ?? "?", booted.seconds, dirtyMiB, filled.seconds, tag, (clock.now - start).seconds * 1000, save.via))
            return Method(name: name, method: method, session: session, console: console, dirtyMiB: dirtyMiB)
        }

        /// Rewrites the tmpfs data (untimed: dirties the pages again), reverts (timed), checks the shell.
        func cycle(timed: Bool) async throws {
            let dirty = try await console.run("dd if=/dev/zero of=/mnt/dirty/data bs=1M count=\(dirtyMiB) conv=notrunc 2>/dev/null; echo DIRTY", timeout: .seconds(600))
            guard dirty.output.contains("DIRTY") else { throw BenchError("\(name): dirtying failed: \(dirty.output)") }
            let begin = ContinuousClock.now
            let result = try await session.revert(to: tag, attaching: [])
            let elapsed = ContinuousClock.now - begin
            let alive = try await console.run("test -s /mnt/dirty/data && echo ALIVE", timeout: .seconds(60))
            guard alive.output.contains("ALIVE") else { throw BenchError("\(name): after the revert: \(alive.output)") }
            guard timed else { return }
            reverts.record(elapsed, via: result.via, steps: result.timings.steps.map { ($0.name, $0.duration) })
        }

        func close() {
            console.close()
            session.close()
        }
    }

    /// The RAM image check alone, in this process, on the fast lab's real
    /// image: what a fast load does before anything is touched (and the
    /// supervisor again), and the same reads as the fingerprint at the save
    /// (an `fstat` and the samples). The revert's steps show it as
    /// `check RAM image`, but on a busy machine one preemption is larger than it.
    static func checkCost(_ fast: Method) throws {
        guard let revert = fast.session.currentRecord.revert,
            let directory = try fast.session.runtime.ramDirectory(path: revert.ramDirectory, create: false)
        else { throw BenchError("\(fast.name): no RAM directory") }
        var samples: [Double] = []
        for _ in 0..<1000 {
            let start = ContinuousClock.now
            if let obstacle = RAMImage.loadObstacle(tag: tag, revert: revert, directory: directory) { throw BenchError(obstacle) }
            samples.append((ContinuousClock.now - start).seconds * 1e6)
        }
        print(String(format: "  RAM image check (fstat + %d samples of 512 bytes; the save's fingerprint reads the same): median %.1f us, p90 %.1f us over 1000",
                     revert.images?[tag]?.sampleOffsets.count ?? 0, RevertBench.Cycles.median(samples), RevertBench.Cycles.p90(samples)))
    }

    static func bench(_ labs: [Method], memory: String, dirtyMiB: Int, runs: Int) async throws {
        try await TimedCycles.interleaved(labs, runs: runs) { try await $0.cycle(timed: $1) }
        print("")
        for lab in labs {
            print(String(format: "  %@ revert (%@): median %.1f ms, p90 %.1f ms", lab.method.padding(toLength: 6, withPad: " ", startingAt: 0), lab.reverts.via, lab.reverts.median, lab.reverts.p90))
            print("    steps, median ms: \(lab.reverts.stepLine)")
        }
        guard let loadvm = labs.first(where: { $0.method == "loadvm" }), let fast = labs.first(where: { $0.method == "fast" }) else { return }
        try checkCost(fast)
        print(String(format: "ratio fast/loadvm %@ dirty: %.3f (target 0.125 or less)", memory, fast.reverts.median / loadvm.reverts.median))
        print(String(format: "fast revert median %@ (%d MiB dirty): %.1f ms (target under 100 ms for 1G on an idle machine)", memory, dirtyMiB, fast.reverts.median))
    }
}
