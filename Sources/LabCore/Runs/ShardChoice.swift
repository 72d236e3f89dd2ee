/// `qlab run --shard auto`: the shard a CI job is, from the CI's own variables.
///
/// - `QLAB_SHARD=K/N`: explicit, for any CI (Jenkins matrix axes, GitHub
///   Actions matrices); it wins over the rest.
/// - GitLab `parallel: N`: `CI_NODE_INDEX` (1-based) of `CI_NODE_TOTAL`.
///
/// Neither set: the whole matrix (a developer's machine runs everything).
public struct ShardChoice: Sendable, Equatable {
    /// nil: the whole matrix.
    public var shard: Shard?
    /// Where it came from, for the line `qlab run` prints.
    public var source: String

    public init(shard: Shard?, source: String) {
        self.shard = shard
        self.source = source
    }

    public enum Refusal: Error, Sendable, CustomStringConvertible, Equatable {
        case badValue(variables: String, value: String)

        public var description: String {
            switch self {
            case .badValue(let variables, let value):
                return "--shard auto: \(variables) is \(value), not a shard K/N with 1 <= K <= N <= \(Shard.maximumCount)"
            }
        }
    }

    /// Reads `environment` (QLAB_SHARD, then CI_NODE_INDEX/CI_NODE_TOTAL).
    public static func auto(_ environment: [String: String]) throws(Refusal) -> ShardChoice {
        if let text = environment["QLAB_SHARD"], !text.isEmpty {
            guard let shard = Shard(text) else { throw .badValue(variables: "QLAB_SHARD", value: "'\(text)'") }
            return ShardChoice(shard: shard, source: "QLAB_SHARD=\(text)")
        }
        let index = environment["CI_NODE_INDEX"] ?? ""
        let total = environment["CI_NODE_TOTAL"] ?? ""
        if !index.isEmpty || !total.isEmpty {
            // GitLab sets both for `parallel:` jobs; one alone is a broken environment.
            guard let shard = Shard("\(index)/\(total)") else {
                throw .badValue(variables: "CI_NODE_INDEX/CI_NODE_TOTAL", value: "'\(index)'/'\(total)'")
            }
            return ShardChoice(shard: shard, source: "CI_NODE_INDEX=\(index), CI_NODE_TOTAL=\(total) (GitLab parallel)")
        }
        return ShardChoice(shard: nil, source: "no QLAB_SHARD or CI_NODE_INDEX/CI_NODE_TOTAL set")
    }

    /// The line `qlab run` prints: "shard 2/4 (from CI_NODE_INDEX=2, CI_NODE_TOTAL=4 (GitLab parallel))".
    public var line: String {
        shard.map { "shard \($0) (from \(source))" } ?? "whole matrix (\(source))"
    }
}

extension ShardChoice.Refusal: ExitStatusCarrying {
    /// The CI's variables do not name a shard: bad input.
    public var exitStatus: ExitStatus { .usage }
}
