import Platform

/// `qlab run --jobs N` (docs/devices-snapshots.md, "Parallel runs"): per
/// guest, the lab boots once to its ready snapshot (fast method) as in a
/// one-job run; while its VM is stopped there, N-1 clones are made, each a lab
/// of its own (`LAB-j2`, ...; runtime dir, sockets, console log, supervisor,
/// owned by this run) whose overlays are byte copies of the lab's run
/// overlays (the ready snapshot inside, the same read-only bases behind) and
/// whose RAM directory holds a hard link to the ready snapshot's RAM image:
/// every clone's QEMU maps that one file copy-on-write. The matrix's entries
/// are then taken from one queue by N workers (the lab and its clones), each
/// reverting before every run as usual (MatrixRun.swift: one loop for one job
/// or N). A clone that breaks goes down and leaves its share to the others;
/// the lab itself restarts as in a one-job run. A clone's state is removed
/// once it is down, and a name with any state is never a clone's.
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
        if let controller = lab.devices.first(where: \.hasHostSCSIDevice) {
            return "device \(controller.name) has a host SCSI device (host:): it serves one guest at a time; run without --jobs"
        }
        for guest in lab.guests where guests.isEmpty || guests.contains(guest.name) {
            if lab.bootsPerDevice(guest) {
                return "guest \(guest.name) boots once per device of the lab's matrix (a device attached at boot): clones start from one ready snapshot; run without --jobs"
            }
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

    /// How many names past `LAB-jN` a run tries when some are taken.
    static let spareCloneNames = maximumJobs

    /// Names for `count` clones, `LAB-j2`, `LAB-j3`, ...: a name that has any
    /// state (a runtime or state directory, so a record or `lab-file.json`, a
    /// lock file, a RAM directory) may be a lab of the user's and is never
    /// taken over; the next free one is used. `taken`: the names passed over.
    func cloneNames(count: Int) -> (free: [String], taken: [String]) {
        var free: [String] = []
        var taken: [String] = []
        for k in 2...(count + 1 + Self.spareCloneNames) where free.count < count {
            let name = Self.cloneName(lab.name, worker: k)
            if controller.runtime(name).hasAnyState { taken.append(name) } else { free.append(name) }
        }
        return (free, taken)
    }

    /// Up to `count` clones of `ready` (stopped at its ready snapshot while
    /// they are made, then running again) as workers. A clone that does not
    /// start, or too few free names, is a note: the run goes on with fewer jobs.
    func startClones(of ready: BootedGuest, count: Int) async -> [Worker] {
        guard ready.session.hasRAMImage(options.readyTag) else {
            observe(.note("--jobs \(options.jobs): guest \(ready.guest.name) reverts with loadvm (\(ready.session.fastSaveObstacle ?? "no RAM image")); its tests run with 1 job"))
            return []
        }
        guard count > 0 else { return [] }
        let (names, taken) = cloneNames(count: count)
        if !taken.isEmpty {
            // Another lab's, or a clone's left by a run that was killed: `qlab list` shows it.
            observe(.note("--jobs \(options.jobs): \(taken.joined(separator: ", ")) already \(taken.count == 1 ? "exists" : "exist") (a lab's state), left alone; "
                + (names.count < count ? "running with \(names.count + 1) jobs" : "clones: \(names.joined(separator: ", "))")))
        }
        var clones: [Worker] = []
        for name in names where !Task.isCancelled {
            let begin = ContinuousClock.now
            do {
                clones.append(Worker(name: name, isClone: true, label: name, booted: try await clone(ready, as: name)))
                observe(.note(String(format: "worker %@ ready in %.1f s (a clone at the ready snapshot)", name, (ContinuousClock.now - begin).inSeconds)))
            } catch {
                // The name had no state: whatever the failed start left is the run's.
                await removeClone(name)
                if Task.isCancelled { break }
                observe(.note("worker \(name) did not start: \(error); running with fewer jobs"))
            }
        }
        // The lab was stopped at its ready snapshot while its overlays were copied.
        _ = try? await ready.session.qmp.cont()
        return clones
    }

    /// A clone of `source` (stopped at its ready snapshot) named `name`: its
    /// overlays copied, the RAM image linked, then a fast revert to the ready
    /// snapshot (a fresh QEMU on the shared image) and `cont`. On failure the
    /// clone is down again (its state is the caller's to remove).
    func clone(_ source: BootedGuest, as name: String) async throws -> BootedGuest {
        try await source.session.qmp.stop()
        // The clone's name is its record's (``LabRecord/lab()``): the lab file's text is the lab's own.
        var cloneLab = lab
        cloneLab.name = name
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
            try up.runtime.adoptRAMImageFingerprint(tag: options.readyTag, from: source.session.currentRecord)
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

    /// Removes a clone's state once it is down: it was the run's alone, and a
    /// name with state is never a clone's again (``cloneNames(count:)``).
    func removeClone(_ name: String) async {
        let controller = controller
        _ = await shielded { try? await controller.remove(name) }
    }
}
