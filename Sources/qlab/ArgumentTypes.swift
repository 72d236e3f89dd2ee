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
