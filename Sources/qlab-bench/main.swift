import Foundation

/// qlab-bench: speed and memory figures, each next to a baseline measured
/// in the same run. Not a test: it asserts nothing, it prints.
let arguments = Array(CommandLine.arguments.dropFirst())
let benches: [String: () async throws -> Void] = [
    "qmp": { try await QMPBench.run(arguments: Array(arguments.dropFirst())) },
    "lifecycle": { try await LifecycleBench.run(arguments: Array(arguments.dropFirst())) },
    "revert": { try await RevertBench.run(arguments: Array(arguments.dropFirst())) },
]
guard let name = arguments.first, let bench = benches[name] else {
    print("usage: qlab-bench \(benches.keys.sorted().joined(separator: "|")) [options]")
    exit(2)
}
// A QEMU that dies under a raw client must be an error, not a silent SIGPIPE.
signal(SIGPIPE, SIG_IGN)
do {
    try await bench()
} catch {
    print("qlab-bench \(name): \(error)")
    exit(1)
}
