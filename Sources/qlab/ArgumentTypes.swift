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
