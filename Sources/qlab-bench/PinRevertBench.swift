import Foundation
import LabCore
import Platform
import QMP

/// `qlab-bench revert --pin HOST [--runs N] [--memory 64M,256M]`: what vfio's
/// pinning of all guest RAM costs when the card is plugged into a QEMU, for
/// each way a revert could give that QEMU its RAM (issue 20). Run where vfio
/// is real (the nested bench's L1, scenario `revert-passthrough`).
///
/// A RAM image like a fast snapshot's (150 MiB of random data in 256 MiB, at
/// 16 MiB; the rest holes) is made once in /dev/shm. Per round, interleaved,
/// each in a fresh paused QEMU (q35, a pcie-pci-bridge; QEMU's start is not
/// timed), the time of `device_add vfio-pci,host=HOST` (the pin) and what
/// must precede it:
/// - `anonymous`: `-m` RAM, as a `loadvm` lab has (untouched pages);
/// - `private`: `share=off` on the image, as the fast revert maps it (pinning
///   for writing copies every page);
/// - `copy`: a copy of the image made for this revert (its data extents, as
///   `snapshot save` copies) then `share=on` on the copy (timed: copy + pin);
/// - `premade`: the same on a copy made beforehand (only the pin timed).
enum PinRevertBench {
    static let usage = "usage: qlab-bench revert --pin HOST [--runs N] [--memory 64M,256M] [--qemu PATH]"
    static let variants = ["anonymous", "private", "copy", "premade"]

    static func run(arguments: [String]) async throws {
        var runs = 5
        var memories = ["64M", "256M"]
        var host = ""
        var qemu = "qemu-system-x86_64"
        var index = 0
        while index < arguments.count {
            let value = index + 1 < arguments.count ? arguments[index + 1] : ""
            switch arguments[index] {
            case "--pin": host = value
            case "--runs": runs = try LifecycleBench.positive(value, "--runs")
            case "--memory": memories = value.split(separator: ",").map(String.init)
            case "--qemu": qemu = value
            default: throw BenchError("unknown option \(arguments[index]); " + usage)
            }
            index += 2
        }
        guard PCIAddress(host) != nil else { throw BenchError("--pin needs a host PCI address bound to vfio-pci; " + usage) }
        var template = Array("/dev/shm/qlab-bench-pin-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw BenchError("mkdtemp in /dev/shm failed: errno \(errno)") }
        let directory = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        print("qlab-bench revert --pin \(host): \(runs) rounds per memory size; variants \(variants.joined(separator: ", ")) interleaved, order rotating; QEMU's start not timed")
        for memory in memories {
            guard let size = ByteSize(parsing: memory) else { throw BenchError("--memory \(memory): not a size") }
            let mebibytes = Int(size.mebibytes)
            let dirtyMiB = mebibytes * 150 / 256
            guard let ram = try PrivateDirectory.open(directory, role: .ram, create: false) else { throw BenchError("\(directory) is gone") }
            // The "live" file becomes the image: sparse, dirty data at 16 MiB.
            try makeImage(ram.path(RAMFiles.live), mebibytes: mebibytes, dirtyMiB: dirtyMiB)
            _ = try RAMImage.saveImage(in: ram, tag: "image")
            var samples: [String: [Double]] = [:]
            for round in -1..<runs {
                for offset in variants.indices {
                    let variant = variants[(offset + max(0, round)) % variants.count]
                    let ms = try await measure(variant, qemu: qemu, host: host, memory: memory, ram: ram, round: round)
                    if round >= 0 { samples[variant, default: []].append(ms) }
                }
            }
            print("")
            let anonymous = RevertBench.Cycles.median(samples["anonymous"] ?? [])
            for variant in variants {
                let values = samples[variant] ?? []
                print(String(format: "  %@ %@: median %.1f ms, p90 %.1f ms, %.2fx anonymous", memory, variant.padding(toLength: 9, withPad: " ", startingAt: 0),
                             RevertBench.Cycles.median(values), RevertBench.Cycles.p90(values), RevertBench.Cycles.median(values) / anonymous))
            }
            try? FileManager.default.removeItem(atPath: ram.path(RAMFiles.live))
            try? FileManager.default.removeItem(atPath: ram.path(RAMFiles.image("image")))
        }
    }

    static func makeImage(_ path: String, mebibytes: Int, dirtyMiB: Int) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let out = FileHandle(forWritingAtPath: path),
            let random = FileHandle(forReadingAtPath: "/dev/urandom")
        else { throw BenchError("cannot write \(path)") }
        defer { try? out.close(); try? random.close() }
        try out.truncate(atOffset: UInt64(mebibytes) << 20)
        try out.seek(toOffset: 16 << 20)
        for _ in 0..<dirtyMiB { try out.write(contentsOf: random.readData(ofLength: 1 << 20)) }
    }

    /// One variant in a fresh paused QEMU: the timed part, in ms.
    static func measure(_ variant: String, qemu: String, host: String, memory: String, ram: PrivateDirectory, round: Int) async throws -> Double {
        let copyTag = "copy\(round + 1)"
        let copyPath = ram.path(RAMFiles.image(copyTag))
        var copyMs = 0.0
        var machine = "q35,accel=tcg"
        var backend: [String] = []
        if variant != "anonymous" {
            var file = ram.path(RAMFiles.image("image"))
            var share = "off"
            if variant == "copy" || variant == "premade" {
                try? FileManager.default.removeItem(atPath: ram.path(RAMFiles.live))
                try FileManager.default.linkItem(atPath: ram.path(RAMFiles.image("image")), toPath: ram.path(RAMFiles.live))
                let start = ContinuousClock.now
                _ = try RAMImage.saveImage(in: ram, tag: copyTag)
                if variant == "copy" { copyMs = (ContinuousClock.now - start).seconds * 1000 }
                file = copyPath
                share = "on"
            }
            machine += ",memory-backend=pc.ram"
            backend = ["-object", "memory-backend-file,id=pc.ram,size=\(memory),mem-path=\(file),share=\(share)"]
        }
        defer { try? FileManager.default.removeItem(atPath: copyPath) }
        let socket = ram.path("qmp-\(variant).sock")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: qemu.contains("/") ? qemu : "/usr/bin/" + qemu)
        process.arguments = ["-machine", machine, "-m", memory, "-nodefaults", "-display", "none", "-S"] + backend
            + ["-device", "pcie-pci-bridge,id=br,bus=pcie.0,addr=0x5", "-qmp", "unix:\(socket),server=on,wait=off"]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: socket)
        }
        let deadline = ContinuousClock.now + .seconds(120)
        var client: QMPClient?
        while client == nil {
            client = try? await QMPClient.connect(path: socket)
            if client == nil {
                guard process.isRunning, ContinuousClock.now < deadline else { throw BenchError("\(variant): QEMU did not open its monitor within 120 s") }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        guard let client else { throw BenchError("no monitor") }
        defer { client.close() }
        let start = ContinuousClock.now
        _ = try await client.execute("device_add", arguments: [
            "driver": "vfio-pci", "host": .string(host), "id": "card", "bus": "br", "addr": "0x1", "rombar": 0,
        ], timeout: .seconds(300))
        let pinMs = (ContinuousClock.now - start).seconds * 1000
        _ = try? await client.execute("quit")
        return copyMs + pinMs
    }
}
