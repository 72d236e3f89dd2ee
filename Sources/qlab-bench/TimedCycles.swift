import Foundation

/// The timed cycles of one thing a bench compares (a revert method's lab): each cycle's
/// milliseconds, its steps' by name (in the order first seen), and how the last one went.
struct TimedCycles {
    var milliseconds: [Double] = []
    var steps: [String: [Double]] = [:]
    var stepOrder: [String] = []
    var via = ""

    /// One timed cycle of `elapsed`, which went `via`, with its steps' durations.
    mutating func record(_ elapsed: Duration, via: String, steps named: [(String, Duration)]) {
        self.via = via
        milliseconds.append(elapsed.seconds * 1000)
        for (step, duration) in named {
            if steps[step] == nil { stepOrder.append(step) }
            steps[step, default: []].append(duration.seconds * 1000)
        }
    }

    var median: Double { RevertBench.Cycles.median(milliseconds) }
    var p90: Double { RevertBench.Cycles.p90(milliseconds) }
    var stepLine: String {
        stepOrder.map { String(format: "%@ %.1f", $0, RevertBench.Cycles.median(steps[$0] ?? [])) }.joined(separator: ", ")
    }

    /// One untimed warm-up round, then `runs` timed rounds; in each round every subject
    /// cycles once, interleaved, the order rotating each round (no subject always goes first).
    static func interleaved<Subject>(_ subjects: [Subject], runs: Int, cycle: (Subject, _ timed: Bool) async throws -> Void) async throws {
        for round in -1..<runs {
            for offset in subjects.indices {
                try await cycle(subjects[(offset + max(0, round)) % subjects.count], round >= 0)
            }
        }
    }
}
