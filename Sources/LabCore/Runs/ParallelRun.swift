import Platform
import Synchronization

/// `qlab run --jobs N` (docs/devices-snapshots.md, "Parallel runs"): per
/// guest, the lab boots once to its ready snapshot (fast method) as in a
/// one-job run; while its VM is stopped there, N-1 clones are made, each a lab
/// of its own (`LAB-j2`, ...; runtime dir, sockets, console log, supervisor,
/// owned by this run) whose overlays are byte copies of the lab's run
/// overlays (the ready snapshot inside, the same read-only bases behind) and
/// whose RAM directory holds a hard link to the ready snapshot's RAM image:
/// every clone's QEMU maps that one file copy-on-write. The matrix's entries
/// are then taken from one queue by N workers (the lab and its clones), each
/// reverting before every run as usual. A clone that breaks goes down and
/// leaves its share to the others; the lab itself restarts as in a one-job run.
extension TestRunner {
    /// The most jobs a run may ask for.
    public static let maximumJobs = 16

    /// Why `lab`'s `guests` (empty: all) cannot run with more than one job;
    /// nil when they can. Passed-through cards serve one guest at a time; clones
    /// need the ready snapshot's RAM image, which only the fast method makes.
    public static func parallelObstacle(lab: Lab, guests: [String]) -> String? {
        if let card = lab.devices.first(where: \.isPassthrough) {
            return "device \(card.name) is passed through (vfio): a host card serves one guest at a time; run without --jobs"
        }
        for guest in lab.guests where guests.isEmpty || guests.contains(guest.name) {
            if lab.effectiveStrategy(for: guest) != .snapshot {
                return "guest \(guest.name) uses strategy reset: clones start from the ready snapshot; use strategy: snapshot or run without --jobs"
            }
            if lab.revertChoice(for: guest) == .loadvm {
                return "guest \(guest.name) has revert: loadvm: clones map the ready snapshot's RAM image, which only the fast method saves; drop `revert: loadvm` or run without --jobs"
            }
        }
        return nil
    }

    /// The name of worker `k` (2...N): `LAB-jK`, a valid lab name of its own.
    public static func cloneName(_ lab: String, worker k: Int) -> String { "\(lab)-j\(k)" }

    /// Entries taken by the workers, and what they produced.
    final class SharedRun: Sendable {
        struct State {
            var queue: [TestRunEntry] = []
            var results: [TestResult] = []
            var boots: [GuestBoot] = []
            var started = 0
        }
        let state = Mutex(State())

        func next() -> (TestRunEntry, index: Int)? {
            state.withLock { s in
                guard !s.queue.isEmpty else { return nil }
                s.started += 1
                return (s.queue.removeFirst(), s.started)
            }
        }

        func append(_ result: TestResult) { state.withLock { $0.results.append(result) } }
        func append(_ boot: GuestBoot) { state.withLock { $0.boots.append(boot) } }
    }

    func runParallel(_ matrix: TestMatrix) async throws -> TestReport {
        let started = wallClockSeconds()
        let clock = ContinuousClock.now
        let total = matrix.entries.count
        observe(.started(total: total))
        let shared = SharedRun()
        // What the report says the run used: the first good boot's QEMU and accelerator.
        var qemuVersion: String?
        var accelerator: String?
        for (guestName, entries) in matrix.byGuest {
            let guest = try lab.selectGuest(guestName)
            shared.state.withLock { $0.queue = entries }
            // The lab itself boots and saves the ready snapshot once.
            var first: BootedGuest?
            var failedBoots = 0
            while first == nil, failedBoots < 2, !Task.isCancelled, shared.state.withLock({ !$0.queue.isEmpty }) {
                let bootStarted = wallClockSeconds()
                do {
                    let booted = try await boot(guest)
                    first = booted
                    shared.append(GuestBoot(guest: guest.name, startedAt: bootStarted, seconds: wallClockSeconds() - bootStarted, ready: true))
                    if qemuVersion == nil { qemuVersion = await Self.qemuVersion(of: booted) }
                    accelerator = accelerator ?? booted.session.record.accel.accelerator.rawValue
                } catch let failure as BootFailure where !Task.isCancelled {
                    failedBoots += 1
                    shared.append(GuestBoot(guest: guest.name, startedAt: bootStarted, seconds: failure.seconds, ready: false))
                    observe(.guestBootFailed(guest: guest.name, seconds: failure.seconds, reason: failure.message))
                    if let (entry, index) = shared.next() {
                        observe(.entryStarted(entry, index: index, total: total))
                        shared.append(TestResult(
                            entry: TestRunEntry.boot(of: guest.name, before: entry), outcome: .error, duration: failure.seconds,
                            message: failure.message, diagnoses: failure.diagnoses, consoleTail: failure.consoleTail, steps: [("boot", failure.seconds)]))
                        let skipped = TestResult(entry: entry, outcome: .skipped, duration: 0, message: "not run: " + failure.message)
                        shared.append(skipped)
                        observe(.entryFinished(skipped, index: index, total: total))
                    }
                } catch {
                    break  // cancelled while booting
                }
            }
            var workers: [(name: String, booted: BootedGuest?, canReboot: Bool)] = [(lab.name, first, true)]
            if let first {
                if !first.session.hasRAMImage(options.readyTag) {
                    observe(.note("--jobs \(options.jobs): guest \(guest.name) reverts with loadvm (\(first.session.fastSaveObstacle ?? "no RAM image")); its tests run with 1 job"))
                } else {
                    // No more workers than this guest has entries.
                    for k in stride(from: 2, through: min(options.jobs, entries.count), by: 1) where !Task.isCancelled {
                        let name = Self.cloneName(lab.name, worker: k)
                        let begin = ContinuousClock.now
                        do {
                            workers.append((name, try await clone(first, as: name), false))
                            observe(.note(String(format: "worker %@ ready in %.1f s (a clone at the ready snapshot)", name, (ContinuousClock.now - begin).inSeconds)))
                        } catch {
                            if Task.isCancelled { break }
                            observe(.note("worker \(name) did not start: \(error); running with fewer jobs"))
                        }
                    }
                    // The lab was stopped at its ready snapshot while its overlays were copied.
                    _ = try? await first.session.qmp.cont()
                }
            }
            let lastFailure = failedBoots >= 2 ? "guest \(guest.name) did not boot twice" : nil
            let rebootable = failedBoots < 2
            await withTaskGroup(of: Void.self) { group in
                for (name, booted, canReboot) in workers {
                    group.addTask { [self] in
                        await self.work(name, booted: booted, canReboot: canReboot && rebootable,
                                        guest: guest, shared: shared, total: total, bootFailure: lastFailure)
                    }
                }
            }
            // Whatever no worker took (every one gone): not run.
            while let (entry, index) = shared.next() {
                let result = TestResult(entry: entry, outcome: Task.isCancelled ? .cancelled : .skipped, duration: 0,
                                        message: Task.isCancelled ? "not run: the run was cancelled" : "not run: " + (lastFailure ?? "no worker was left"))
                shared.append(result)
                if !Task.isCancelled { observe(.entryFinished(result, index: index, total: total)) }
            }
        }
        let (results, boots) = shared.state.withLock { ($0.results, $0.boots) }
        // One report in matrix order (a boot entry before the entry it booted for).
        let ordered = results.enumerated().sorted { a, b in
            (a.element.entry.matrixIndex, a.element.isBoot ? 0 : 1, a.offset) < (b.element.entry.matrixIndex, b.element.isBoot ? 0 : 1, b.offset)
        }.map(\.element)
        return TestReport(
            lab: lab.name, startedAt: started, duration: (ContinuousClock.now - clock).inSeconds,
            shards: options.shard.map { [$0.description] } ?? [], results: ordered, boots: boots.sorted { $0.startedAt < $1.startedAt },
            qemuVersion: qemuVersion, accelerator: accelerator)
    }

    /// A clone of `source` (stopped at its ready snapshot) named `name`: its
    /// overlays copied, the RAM image linked, then a fast revert to the ready
    /// snapshot (a fresh QEMU on the shared image) and `cont`. On failure the
    /// clone is down again and nothing of it is left.
    func clone(_ source: BootedGuest, as name: String) async throws -> BootedGuest {
        try await source.session.qmp.stop()
        var cloneLab = lab
        cloneLab.name = name
        cloneLab.source = Self.renamedSource(lab.source, to: name)
        var upOptions = Self.upOptions(source.guest)
        upOptions.paused = true
        upOptions.cloneOf = lab
        let up = try await controller.up(lab: cloneLab, options: upOptions)
        var session: LabSession?
        do {
            guard up.record.revert?.method == .fast, let target = try up.runtime.ramDirectory(path: up.record.revert?.ramDirectory, create: false),
                let origin = try source.session.runtime.ramDirectory(path: source.session.currentRecord.revert?.ramDirectory, create: false)
            else { throw LabError.system("worker \(name) has no RAM directory for the fast method (\(up.record.revert?.reason ?? "no revert record"))") }
            try RAMImage.shareImage(tag: options.readyTag, from: origin, into: target)
            session = try await LabSession.open(runtime: up.runtime)
            _ = try await session!.revert(to: options.readyTag, attaching: [])
            try await session!.qmp.cont()
            let console = try GuestConsole.connect(runtime: up.runtime)
            var commands: any GuestSession = console
            if !(source.commands is GuestConsole), let agent = try? await GuestConnection.open(runtime: up.runtime, transport: .agent) {
                commands = agent
            }
            let booted = BootedGuest(guest: source.guest, session: session!, console: console, commands: commands, strategy: source.strategy, ownership: up.ownership)
            return booted
        } catch {
            session?.close()
            await takeDown(name, ownership: up.ownership)
            throw error
        }
    }

    /// `source` (a lab's YAML) with its top-level `name:` set to `name`, so a
    /// clone's record reads back as the clone. Empty stays empty.
    public static func renamedSource(_ source: String, to name: String) -> String {
        var lines = source.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if let index = lines.firstIndex(where: { $0.hasPrefix("name:") }) { lines[index] = "name: \(name)" }
        return lines.joined(separator: "\n")
    }

    /// One worker: takes entries until none is left. `canReboot`: the lab
    /// itself restarts after a crash or hang (twice failing to boot: the rest
    /// of what it takes is skipped); a clone goes down and stops taking.
    func work(_ name: String, booted initial: BootedGuest?, canReboot: Bool, guest: LabGuest, shared: SharedRun, total: Int, bootFailure: String?) async {
        var booted = initial
        var failedBoots = 0
        var bootFailure = bootFailure
        while let (entry, index) = shared.next() {
            var result: TestResult
            if Task.isCancelled {
                result = TestResult(entry: entry, outcome: .cancelled, duration: 0, message: "not run: the run was cancelled")
                result.worker = name
                shared.append(result)
                continue
            }
            observe(.entryStarted(entry, index: index, total: total))
            if booted == nil && canReboot && failedBoots < 2 {
                let bootStarted = wallClockSeconds()
                do {
                    booted = try await boot(guest)
                    shared.append(GuestBoot(guest: guest.name, startedAt: bootStarted, seconds: wallClockSeconds() - bootStarted, ready: true))
                } catch let failure as BootFailure where !Task.isCancelled {
                    shared.append(GuestBoot(guest: guest.name, startedAt: bootStarted, seconds: failure.seconds, ready: false))
                    failedBoots += 1
                    bootFailure = failure.message
                    observe(.guestBootFailed(guest: guest.name, seconds: failure.seconds, reason: failure.message))
                    var bootResult = failure.result(guest: guest.name, before: entry)
                    bootResult.worker = name
                    shared.append(bootResult)
                } catch {}
            }
            var leave = false
            if Task.isCancelled {
                result = TestResult(entry: entry, outcome: .cancelled, duration: 0, message: "cancelled while the guest booted")
            } else if let current = booted {
                let (outcome, healthy) = await runEntry(entry, on: current, index: index, total: total)
                result = outcome
                if !healthy && !Task.isCancelled {
                    observe(.note((canReboot ? "restarting guest \(guest.name)" : "worker \(name) stops")
                        + " after \(outcome.outcome.rawValue) in \(entry.displayName)"))
                    await shutDown(current, name: name)
                    booted = nil
                    leave = !canReboot
                }
            } else {
                result = TestResult(entry: entry, outcome: .skipped, duration: 0, message: "not run: " + (bootFailure ?? "guest \(guest.name) did not boot"))
            }
            result.worker = name
            shared.append(result)
            observe(.entryFinished(result, index: index, total: total))
            if leave { break }
        }
        await shutDown(booted, name: name)
    }
}
