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

/// `--wait [DURATION]` of `run`, `up` and `health`: one option, one help text. A command
/// takes it by including this group (`@OptionGroup var wait: WaitOptions`); that inclusion is
/// also what makes a bare `--wait` of it mean "no limit" (``WaitArgument/normalized(_:)``).
struct WaitOptions: ParsableArguments {
    @Option(name: .customLong("wait"), help: ArgumentHelp("While another command has the lab or one of its host cards, wait for it up to DURATION (`30s`, `10m`; a bare --wait: no limit), saying who has it; without --wait that is exit 4 (busy). When the wait expired: exit 124.", valueName: "DURATION"))
    var duration: WaitArgument?

    /// What the command does while the lab or a card is busy: wait (up to the duration) or not.
    var policy: WaitPolicy { duration?.policy ?? .no }
}

/// The value of `--wait` (``WaitOptions``): wait for the lab and its cards while another
/// command has them, up to DURATION (`30s`, `10m`, `1h`; a bare `--wait`: no limit).
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

    /// Whether `command` takes `--wait [DURATION]`: it includes ``WaitOptions`` (read from its
    /// declared properties, so a command that adds the group is covered without a list to keep).
    /// `screen --wait TEXT` is another option and is not.
    static func takesDuration(_ command: ParsableCommand.Type) -> Bool {
        Mirror(reflecting: command.init()).children.contains { $0.value is OptionGroup<WaitOptions> }
    }

    /// ArgumentParser has no option whose value may be left out: a `--wait` of a command that
    /// ``takesDuration(_:)``, not followed by a duration, becomes `--wait=forever` before parsing.
    static func normalized(_ arguments: [String], root: ParsableCommand.Type) -> [String] {
        guard let first = arguments.first,
            let command = root.configuration.subcommands.first(where: { $0._commandName == first }),
            takesDuration(command)
        else { return arguments }
        var result = arguments
        for (index, argument) in arguments.enumerated() where argument == "--wait" {
            let next = index + 1 < arguments.count ? arguments[index + 1] : nil
            if next.flatMap(WaitArgument.init(argument:)) == nil { result[index] = "--wait=" + noLimit }
        }
        return result
    }

    static var defaultCompletionKind: CompletionKind { .list([noLimit, "30s", "10m", "1h"]) }
}
