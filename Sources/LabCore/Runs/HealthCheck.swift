import Platform

/// A lab's health check (`health_check:`, LAVA's device health kept small):
/// `qlab run` runs it before the matrix; when it fails no entry runs, each is
/// an `error` naming the check, and the lab's cards are marked bad here
/// (``CardHealthStore``), so later runs that need them fail fast with the
/// reason until `qlab cards --clear-bad ADDR` or a passing `qlab health LAB`.
extension TestRunner {
    /// The lab (waited for, or exit 4) and its cards (``CardReservation``), unless the caller holds them.
    func reserve() async throws -> CardReservation? {
        if let held = options.heldCards { return held }
        let note: @Sendable (String) -> Void = { [observe] in observe(.note($0)) }
        try await controller.waitForLab(lab.name, wait: options.wait, onWait: note)
        return try await CardReservation.take(
            cards: controller.planner.reservedCards(of: lab), lab: lab.name, roots: controller.hostRoots,
            environment: controller.environment, wait: options.wait, onWait: note)
    }

    /// Why the matrix must not run: a card marked bad, or the health check failing now; nil: go on.
    func healthRefusal(_ reservation: CardReservation?) async throws -> String? {
        let store = CardHealthStore(environment: controller.environment)
        let cards = reservation?.cards ?? []
        if let bad = cards.lazy.compactMap({ store.read($0.description) }).first(where: { $0.status == .bad }) {
            let text = "card \(bad.address) is marked bad: \(bad.description); `qlab cards --clear-bad \(bad.address)` or a passing `qlab health \(lab.name)` returns it to service"
            observe(.note(text))
            return text
        }
        guard options.healthCheck, let check = lab.healthCheck else { return nil }
        let failure = try await runHealthCheck(check, reservation: reservation)
        return failure.map { "health check \(check) failed: \($0)" }
    }

    /// Runs the health check once and records each card's health; nil when it passed, else why not.
    public func runHealthCheck(_ check: String, reservation: CardReservation?) async throws -> String? {
        observe(.note("health check \(check) of lab \(lab.name)"))
        let failure: String?
        if check == Lab.doctorHealthCheck {
            let report = HostDoctor.preflight(lab: lab, roots: controller.hostRoots)
            failure = report.ok ? nil : report.failures.map { ($0.device.map { $0 + " " } ?? "") + $0.check.id + ": " + $0.check.detail }.joined(separator: "; ")
        } else {
            var options = Options()
            options.tests = [check]
            options.transport = self.options.transport
            options.stop = self.options.stop
            options.healthCheck = false
            options.heldCards = reservation
            options.labels = self.options.labels
            let runner = try TestRunner(controller: controller, labFile: labFile, options: options, observe: observe)
            let report = try await runner.run()
            if report.wasCancelled { throw CancellationError() }
            failure = report.allPassed ? nil : report.results.first { $0.outcome != .passed }.map { result in
                "\(result.entry.displayName) on \(result.entry.guest): \(result.outcome.rawValue)" + (result.message.isEmpty ? "" : ": \(result.message)")
            } ?? "it ran no entry"
        }
        let store = CardHealthStore(environment: controller.environment)
        for card in reservation?.cards ?? [] {
            try store.write(CardHealth(address: card.description, status: failure == nil ? .good : .bad, reason: failure ?? "", lab: lab.name, check: check))
        }
        observe(.note("health check \(check): " + (failure.map { "failed: \($0)" } ?? "passed")))
        return failure
    }

    /// `qlab health LAB`: the lab and its cards reserved, its health check run and recorded.
    public func health() async throws -> String? {
        guard let check = lab.healthCheck else {
            throw LabFileError(file: labFile, keyPath: "health_check", message: "lab \(lab.name) names no health check; add `health_check: TEST` (a test of the lab) or `health_check: doctor`")
        }
        let reservation = try await reserve()
        defer { withExtendedLifetime(reservation) {} }
        return try await runHealthCheck(check, reservation: reservation)
    }

    /// The report of a run that ran nothing: every entry an `error` saying why.
    func refused(_ matrix: TestMatrix, because reason: String) -> TestReport {
        let results = matrix.entries.map { TestResult(entry: $0, outcome: .error, duration: 0, message: reason) }
        for (index, result) in results.enumerated() { observe(.entryFinished(result, index: index + 1, total: results.count)) }
        return TestReport(lab: lab.name, startedAt: wallClockSeconds(), duration: 0, shards: options.shard.map { [$0.description] } ?? [], results: results)
    }
}
