import Platform
import Synchronization

/// The one loop that runs a matrix, one job or N (`--jobs`): per guest, the
/// lab boots to its ready state for the first entry; under `--jobs N` clones
/// of it join (ParallelRun.swift); then every worker (the lab, the clones)
/// takes entries from one queue until none is left. A one-job run is this
/// loop with one worker. Each entry goes through the same steps wherever it
/// runs: taken and announced (``take(for:)``), its guest booted if it needs
/// a boot (``bootIfNeeded(_:for:)``), run or said why not
/// (``finish(_:by:)``).
extension TestRunner {
    /// An entry waiting in the queue: a matrix entry, or one to run again
    /// (`--retry-errors`) with its attempts so far and its place in the progress.
    struct Pending: Sendable {
        var entry: TestRunEntry
        var attempts: [TestResult] = []
        /// Its progress index, once taken the first time.
        var index: Int?
        /// Its last attempt's boot failed: the retry boots again even after two failed boots.
        var afterBootFailure = false
    }

    /// The run's queue of entries and what the workers produced.
    final class RunQueue: Sendable {
        struct State {
            var queue: [Pending] = []
            var results: [TestResult] = []
            var boots: [GuestBoot] = []
            /// Entries taken so far in the whole run: the next one's progress index.
            var started = 0
            /// What the report says the run used: the first good boot's QEMU and accelerator.
            var qemuVersion: String?
            var accelerator: String?
        }
        let state = Mutex(State())
        let total: Int

        init(total: Int) { self.total = total }

        func load(_ entries: [TestRunEntry]) { state.withLock { $0.queue = entries.map { Pending(entry: $0) } } }

        /// The next entry and its progress index (a retry keeps its first one).
        func next() -> (Pending, index: Int)? {
            state.withLock { s in
                guard !s.queue.isEmpty else { return nil }
                let pending = s.queue.removeFirst()
                if let index = pending.index { return (pending, index) }
                s.started += 1
                return (pending, s.started)
            }
        }

        /// An entry to run again: first in the queue, so a retry follows its failed attempt.
        func retry(_ pending: Pending) { state.withLock { $0.queue.insert(pending, at: 0) } }

        var isEmpty: Bool { state.withLock { $0.queue.isEmpty } }

        func append(_ result: TestResult) { state.withLock { $0.results.append(result) } }
        func append(_ boot: GuestBoot) { state.withLock { $0.boots.append(boot) } }
    }

    /// One lab taking entries: the lab itself, or a `--jobs` clone (`LAB-jK`).
    final class Worker: @unchecked Sendable {
        let name: String
        /// A clone does not boot: one whose guest breaks goes down and leaves its share to the others.
        let isClone: Bool
        /// What its results carry as `worker`: its name under `--jobs`, nil in a one-job run.
        let label: String?
        var booted: BootedGuest?
        var failedBoots = 0
        /// Why its guest last failed to boot: what the entries it could not run say.
        var bootFailure: String?
        /// The devices its last boot left out (a device dimension's others,
        /// ``Lab/devicesLeftOut(for:device:)``); nil before its first boot.
        var leftOut: [String]?

        init(name: String, isClone: Bool, label: String?, booted: BootedGuest? = nil) {
            self.name = name
            self.isClone = isClone
            self.label = label
            self.booted = booted
        }

        /// A guest gets a second boot (QEMU may have been killed from outside), not a third.
        var mayBoot: Bool { !isClone && failedBoots < 2 }
    }

    /// An entry a worker took, with its place in the run's progress.
    struct TakenEntry {
        var entry: TestRunEntry
        var index: Int
        /// False when the run was cancelled before it started: no progress event, no boot.
        var started: Bool
        /// Its attempts before this one (`--retry-errors`).
        var attempts: [TestResult] = []
        /// This attempt's boot, when it failed: the `boot` entry's result.
        var bootFailure: TestResult?

        /// 1 for the first attempt.
        var attempt: Int { attempts.count + 1 }
    }

    /// Runs `matrix`'s entries guest by guest and returns the whole report:
    /// the lab's before_all hook first (its failure makes every entry an
    /// `error`, and nothing boots), its after_all hook last, whatever happened
    /// (RunHooks.swift). Under `--jobs` each runs once: clones are made per guest, inside.
    func runMatrix(_ matrix: TestMatrix) async throws -> TestReport {
        let started = wallClockSeconds()
        let clock = ContinuousClock.now
        let run = RunQueue(total: matrix.entries.count)
        observe(.started(total: run.total))
        var runHooks: [RunHookResult] = []
        if let hook = lab.hooks.beforeAll {
            let before = await runRunHook("before_all", hook, matrix: matrix, results: [])
            runHooks.append(before)
            if !before.succeeded {
                for entry in matrix.entries {
                    // The hook's output is in its message (its end) and in the report's `run_hooks`, once.
                    let result = TestResult(entry: entry, outcome: before.outcome == .cancelled ? .cancelled : .error, duration: 0,
                                            message: "not run: " + before.message)
                    run.append(result)
                }
            }
        }
        if runHooks.allSatisfy(\.succeeded) {
            for (guestName, entries) in matrix.byGuest {
                let guest = try lab.selectGuest(guestName)
                run.load(entries)
                await runGuest(guest, entries: entries.count, run: run)
            }
        }
        if let hook = lab.hooks.afterAll {
            runHooks.append(await runRunHook("after_all", hook, matrix: matrix, results: run.state.withLock { $0.results }))
        }
        let state = run.state.withLock { $0 }
        // One report in matrix order (a boot entry before the entry it booted for).
        let ordered = state.results.enumerated().sorted { a, b in
            (a.element.entry.matrixIndex, a.element.isBoot ? 0 : 1, a.offset) < (b.element.entry.matrixIndex, b.element.isBoot ? 0 : 1, b.offset)
        }.map(\.element)
        var report = TestReport(
            lab: lab.name, startedAt: started, duration: (ContinuousClock.now - clock).inSeconds,
            shards: options.shard.map { [$0.description] } ?? [], results: ordered,
            boots: state.boots.sorted { $0.startedAt < $1.startedAt }, qemuVersion: state.qemuVersion, accelerator: state.accelerator)
        report.labels = labels
        report.runHooks = runHooks
        return report
    }

    /// One guest's entries. The lab boots for the first entry (a failed boot
    /// skips the entry it was for; after a second one every entry is
    /// skipped); once it is ready, clones of it join under `--jobs`; then the
    /// workers share the queue. The lab itself never leaves the queue (it
    /// boots again after a crash), so every entry ends with a result.
    func runGuest(_ guest: LabGuest, entries: Int, run: RunQueue) async {
        let context = GuestRun(guest: guest, run: run)
        let labWorker = Worker(name: lab.name, isClone: false, label: options.jobs > 1 ? lab.name : nil)
        // Clones are made from the lab's ready snapshot: the lab boots first.
        var first: TakenEntry?
        while first == nil, let taken = await take(for: labWorker, context) {
            if labWorker.booted != nil { first = taken } else { _ = await finish(taken, by: labWorker, context) }
        }
        var clones: [Worker] = []
        if let ready = labWorker.booted, options.jobs > 1 {
            // No more workers than this guest has entries.
            clones = await startClones(of: ready, count: min(options.jobs, entries) - 1)
            for clone in clones { clone.leftOut = labWorker.leftOut }
        }
        await withTaskGroup(of: Void.self) { [first] group in
            group.addTask { [self] in
                if let first { _ = await finish(first, by: labWorker, context) }
                await work(labWorker, context)
            }
            for clone in clones {
                group.addTask { [self] in await work(clone, context) }
            }
        }
        // A clone whose guest broke leaves its retry in the queue: the lab boots
        // again for it if it had left the queue already.
        while !run.isEmpty { await work(labWorker, context) }
    }

    /// What every step of one guest's entries needs: the guest and the run's queue.
    struct GuestRun: Sendable {
        var guest: LabGuest
        var run: RunQueue
    }

    /// A worker's loop: takes entries until none is left or its guest broke
    /// (a clone); then its lab goes down (a clone's state goes with it).
    func work(_ worker: Worker, _ context: GuestRun) async {
        while let taken = await take(for: worker, context) {
            guard await finish(taken, by: worker, context) else { break }
        }
        await shutDown(worker.booted, name: worker.name)
        worker.booted = nil
        if worker.isClone { await removeClone(worker.name) }
    }

    /// The next entry for `worker`: announced, and its guest booted when it needs a boot.
    func take(for worker: Worker, _ context: GuestRun) async -> TakenEntry? {
        guard let (pending, index) = context.run.next() else { return nil }
        var taken = TakenEntry(entry: pending.entry, index: index, started: !Task.isCancelled, attempts: pending.attempts)
        guard taken.started else { return taken }
        observe(.entryStarted(taken.entry, index: index, total: context.run.total))
        taken.bootFailure = await bootIfNeeded(worker, for: taken.entry, attempt: taken.attempt, context, retrying: pending.afterBootFailure)
        return taken
    }

    /// Boots the worker's guest when it has none and may boot (or `retrying`
    /// an entry whose boot failed), recording the boot; a failed one's `boot`
    /// entry (before `entry`) is returned: ``finish(_:by:_:)`` records it, or
    /// keeps it as the entry's attempt and retries.
    ///
    /// The device dimension (DeviceDimension.swift): an entry whose device is
    /// attached at boot (a guest without hotplug) needs a boot with only that
    /// device, so the guest goes down and boots again when the entry's
    /// boot-time devices differ from its last boot's (which also gives that
    /// device its own two tries at booting).
    func bootIfNeeded(_ worker: Worker, for entry: TestRunEntry, attempt: Int = 1, _ context: GuestRun, retrying: Bool = false) async -> TestResult? {
        let guest = context.guest
        let leftOut = lab.devicesLeftOut(for: guest, device: entry.device)
        if let last = worker.leftOut, last != leftOut, !worker.isClone {
            if let booted = worker.booted {
                await shutDown(booted, name: worker.name)
                worker.booted = nil
            }
            worker.failedBoots = 0
            worker.bootFailure = nil
        }
        guard worker.booted == nil, worker.mayBoot || (retrying && !worker.isClone) else { return nil }
        worker.leftOut = leftOut
        let bootStarted = wallClockSeconds()
        do {
            let booted = try await boot(guest, before: entry, attempt: attempt, leavingOut: leftOut)
            worker.booted = booted
            // A retry that booted: the guest boots; its earlier failures count no more.
            if retrying { worker.failedBoots = 0 }
            context.run.append(GuestBoot(guest: guest.name, startedAt: bootStarted, seconds: wallClockSeconds() - bootStarted, ready: true))
            if context.run.state.withLock({ $0.qemuVersion == nil }) {
                let version = await Self.qemuVersion(of: booted)
                context.run.state.withLock { s in
                    s.qemuVersion = s.qemuVersion ?? version
                    s.accelerator = s.accelerator ?? booted.session.record.accel.accelerator.rawValue
                }
            }
        } catch let failure as BootFailure where !Task.isCancelled {
            context.run.append(GuestBoot(guest: guest.name, startedAt: bootStarted, seconds: failure.seconds, ready: false))
            worker.failedBoots += 1
            worker.bootFailure = failure.message
            observe(.guestBootFailed(guest: guest.name, seconds: failure.seconds, reason: failure.message))
            var result = failure.result(guest: guest.name, before: entry)
            result.worker = worker.label
            return result
        } catch {
            // Cancelled while booting: the entry says so (``finish(_:by:_:)``).
        }
        return nil
    }

    /// Runs a taken entry on the worker's guest, or says why it did not run,
    /// and records the result, or puts the entry back in the queue to run
    /// again (``retry(_:_:by:_:)``). False when the worker leaves the queue (a
    /// clone whose guest broke); the lab itself restarts its guest instead.
    func finish(_ taken: TakenEntry, by worker: Worker, _ context: GuestRun) async -> Bool {
        let entry = taken.entry
        var result: TestResult
        var stays = true
        if !taken.started {
            result = TestResult(entry: entry, outcome: .cancelled, duration: 0, message: "not run: the run was cancelled")
        } else if Task.isCancelled {
            result = TestResult(entry: entry, outcome: .cancelled, duration: 0, message: "cancelled while the guest booted")
            if let boot = taken.bootFailure { context.run.append(boot) }
        } else if let booted = worker.booted {
            let (outcome, healthy) = await runEntry(entry, on: booted, index: taken.index, total: context.run.total, attempt: taken.attempt)
            result = outcome
            if !healthy && !Task.isCancelled {
                observe(.note((worker.isClone ? "worker \(worker.name) stops" : "restarting guest \(context.guest.name)")
                    + " after \(outcome.outcome.rawValue) in \(entry.displayName)"))
                await shutDown(booted, name: worker.name)
                worker.booted = nil
                stays = !worker.isClone
            }
        } else if var boot = taken.bootFailure {
            // This attempt's boot failed: the attempt is an error of the entry's when it is retried.
            boot.entry = entry
            if retry(boot, taken, by: worker, context, afterBootFailure: true) { return stays }
            context.run.append(taken.bootFailure!)
            result = TestResult(entry: entry, outcome: .skipped, duration: 0, message: "not run: " + boot.message)
        } else {
            result = TestResult(entry: entry, outcome: .skipped, duration: 0,
                                message: "not run: " + (worker.bootFailure ?? "guest \(context.guest.name) did not boot"))
        }
        result.worker = worker.label
        if retry(result, taken, by: worker, context) { return stays }
        result.attempts = taken.attempts
        context.run.append(result)
        if taken.started { observe(.entryFinished(result, index: taken.index, total: context.run.total)) }
        return stays
    }

    /// Puts `taken` back first in the queue with `attempt` (its outcome one
    /// of `--retry-on`'s) as one of its attempts, when it has a retry left and
    /// the run goes on; false otherwise. The next attempt starts from a fresh
    /// revert, or a fresh boot when the guest broke or did not boot; a clone
    /// whose guest broke leaves it to another worker.
    func retry(_ attempt: TestResult, _ taken: TakenEntry, by worker: Worker, _ context: GuestRun, afterBootFailure: Bool = false) -> Bool {
        guard taken.started, !Task.isCancelled, options.retryOn.contains(attempt.outcome), taken.attempts.count < options.retries else { return false }
        var attempt = attempt
        attempt.worker = worker.label
        observe(.note("retrying \(entry: taken.entry) (attempt \(taken.attempt + 1) of at most \(options.retries + 1)) after \(attempt.outcome.rawValue): \(attempt.message)"))
        context.run.retry(Pending(entry: taken.entry, attempts: taken.attempts + [attempt], index: taken.index, afterBootFailure: afterBootFailure))
        return true
    }
}

extension String.StringInterpolation {
    /// An entry as the progress lines name it: `linux one`, `linux scsi-am one#2`.
    mutating func appendInterpolation(entry: TestRunEntry) {
        appendLiteral(entry.guest + " " + (entry.device.map { $0 + " " } ?? "") + entry.displayName)
    }
}
