import ArgumentParser
import LabCore

/// `--via` / `--transport`: auto, agent or console (listed in --help and completion).
extension GuestTransport: ExpressibleByArgument {}

/// `run --shard`: `K/N` (1 <= K <= N) or `auto` (from the CI's variables, ``ShardChoice``).
enum ShardArgument: ExpressibleByArgument {
    case auto
    case part(Shard)

    init?(argument: String) {
        if argument == "auto" {
            self = .auto
        } else if let shard = Shard(argument) {
            self = .part(shard)
        } else {
            return nil
        }
    }

    var defaultValueDescription: String {
        switch self {
        case .auto: return "auto"
        case .part(let shard): return shard.description
        }
    }

    static var defaultCompletionKind: CompletionKind { .list(["auto"]) }
}

/// `run --retry-on`: the outcomes `--retry-errors` reruns, comma-separated
/// (`error,timeout`): `error`, `timeout`, `failed`.
struct RetryOutcomes: ExpressibleByArgument {
    var outcomes: Set<TestOutcome>

    init?(argument: String) {
        var outcomes: Set<TestOutcome> = []
        for word in argument.split(separator: ",", omittingEmptySubsequences: false) {
            guard let outcome = TestOutcome(rawValue: word.trimmingCharacters(in: .whitespaces)),
                TestRunner.Options.retryableOutcomes.contains(outcome)
            else { return nil }
            outcomes.insert(outcome)
        }
        self.outcomes = outcomes
    }

    static var defaultCompletionKind: CompletionKind { .list(TestRunner.Options.retryableOutcomes.map(\.rawValue)) }
}

/// `run --wait [DURATION]`, `up --wait [DURATION]`: wait for the lab and its cards while
/// another command has them, up to DURATION (`30s`, `10m`, `1h`; a bare `--wait`: no limit).
struct WaitArgument: ExpressibleByArgument {
    var policy: WaitPolicy

    init?(argument: String) {
        if argument == Self.noLimit {
            policy = .upTo(nil)
        } else if let duration = LabDuration.parse(argument) {
            policy = .upTo(duration)
        } else {
            return nil
        }
    }

    /// What a bare `--wait` stands for.
    static let noLimit = "forever"

    /// The commands whose `--wait` takes a duration (`screen --wait TEXT` is another option).
    static let commands: Set<String> = ["run", "up", "health"]

    /// ArgumentParser has no option whose value may be left out: a `--wait` of ``commands``
    /// not followed by a duration becomes `--wait=forever` before parsing.
    static func normalized(_ arguments: [String]) -> [String] {
        guard let command = arguments.first, commands.contains(command) else { return arguments }
        var result = arguments
        for (index, argument) in arguments.enumerated() where argument == "--wait" {
            let next = index + 1 < arguments.count ? arguments[index + 1] : nil
            if next.flatMap(WaitArgument.init(argument:)) == nil { result[index] = "--wait=" + noLimit }
        }
        return result
    }

    static var defaultCompletionKind: CompletionKind { .list([noLimit, "30s", "10m", "1h"]) }
}
