
/// How long each step of an operation took, in order: what `attach`,
/// `detach`, snapshot operations and the revert cycle report, so a caller
/// (the test loop, `qlab-bench revert`) sees where the time goes.
public struct StepTimings: Sendable, CustomStringConvertible {
    public struct Step: Sendable, Hashable {
        /// What ran: a QMP command (`device_add scsi-am`), an event waited
        /// for (`DEVICE_DELETED scsi-am`) or a host action (`overlay`).
        public var name: String
        public var duration: Duration

        public var milliseconds: Double { duration.milliseconds }
    }

    public private(set) var steps: [Step] = []

    public init() {}

    /// Appends a step that began at `start` and ends now.
    public mutating func record(_ name: String, since start: ContinuousClock.Instant) {
        steps.append(Step(name: name, duration: ContinuousClock.now - start))
    }

    /// Appends a step measured elsewhere (the supervisor's part of a fast revert).
    public mutating func record(_ name: String, duration: Duration) {
        steps.append(Step(name: name, duration: duration))
    }

    /// Appends every step of `other`, each name prefixed with `prefix`.
    public mutating func append(_ other: StepTimings, prefix: String = "") {
        steps += other.steps.map { Step(name: prefix + $0.name, duration: $0.duration) }
    }

    /// The sum of the steps.
    public var total: Duration { steps.reduce(.zero) { $0 + $1.duration } }

    /// The summed duration of every step whose name starts with `prefix`.
    public func duration(of prefix: String) -> Duration {
        steps.filter { $0.name.hasPrefix(prefix) }.reduce(.zero) { $0 + $1.duration }
    }

    /// `name 1.2 ms, name 0.4 ms`.
    public var description: String {
        steps.map { "\($0.name) \(formatMilliseconds($0.duration))" }.joined(separator: ", ")
    }
}

extension Duration {
    /// The duration in milliseconds, as a Double.
    public var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}

/// `12.3 ms` (one decimal below 100 ms), `1234 ms` above.
public func formatMilliseconds(_ duration: Duration) -> String {
    let ms = duration.milliseconds
    if ms < 100 { return String((ms * 10).rounded() / 10) + " ms" }
    return String(Int(ms.rounded())) + " ms"
}
