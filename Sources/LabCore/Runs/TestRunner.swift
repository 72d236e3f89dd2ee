import Logging
import Platform
import Synchronization

/// What a run reports while it goes, for a progress display.
public enum TestRunEvent: Sendable {
    case started(total: Int)
    case guestBooting(guest: String)
    case guestReady(guest: String, seconds: Double)
    /// The guest did not boot; `reason` says why (no ready text within N s, QEMU's exit).
    case guestBootFailed(guest: String, seconds: Double, reason: String)
    case entryStarted(TestRunEntry, index: Int, total: Int)
    case entryFinished(TestResult, index: Int, total: Int)
    /// Something worth a line of its own: a restart, a hook's failure.
    case note(String)
}

/// `qlab run`: for each guest, boot once to `ready` and save the ready
/// snapshot (strategy snapshot); then for each test and repeat: revert,
/// attach the lab's hotplug devices, rescan, run the test with its timeout,
/// judge it. Strategy reset uses a system_reset instead of a revert. A crash,
/// hang or timeout is recorded with its diagnosis and console tail, the guest
/// is restarted, and the loop goes on. A guest that does not boot is a
/// `boot` entry (an error with the reason and that boot's console tail) and
/// the entry it booted for is `skipped`; the next entry boots it once more,
/// and after a second failed boot the guest's remaining entries are `skipped`.
///
/// Cancelling the task that runs ``run()`` (``StopRequest/cancelling(_:)``)
/// stops the current step (a hook's whole process group is killed), takes
/// the lab down and returns the report so far, the rest marked `cancelled`.
/// The lab belongs to the run: should this process die, its supervisor takes
/// QEMU down by itself (``LabOwnership``).
public final class TestRunner: Sendable {
    public struct Options: Sendable {
        public var guests: [String] = []
        public var tests: [String] = []
        /// `--device`: the devices of the lab's device dimension to run with (empty: all).
        public var devices: [String] = []
        public var repeats = 1
        public var shard: Shard?
        /// The snapshot every run starts from.
        public var readyTag = "qlab-ready"
        public var transport: GuestTransport = .auto
        /// Workers (`--jobs`): above 1, the lab and clones of it at the ready
        /// snapshot run the matrix together (``runMatrix(_:)``, ParallelRun.swift).
        public var jobs = 1
        /// What cancels the run, if any: its second request makes the clean-up hurry (SIGKILL).
        public var stop: StopRequest?
        /// Where a run that did not pass saves its guest's screen (guests with a display); nil: nowhere.
        public var screenshotDirectory: String?
        /// `--retry-errors N`: an entry whose outcome is in ``retryOn`` runs again, up to
        /// N more times, from a fresh revert (a fresh boot when its guest broke or did not boot).
        public var retries = 0
        /// `--retry-on`: the outcomes that are retried (`error` unless asked; `timeout`, `failed` may be added).
        public var retryOn: Set<TestOutcome> = [.error]
        /// `--wait`: wait for the lab and its host cards while another command has them.
        public var wait: WaitPolicy = .no
        /// Run the lab's health check first (``Lab/healthCheck``); off for the health check's own run.
        public var healthCheck = true
        /// The cards the caller holds already (the health check's run inside a run).
        public var heldCards: CardReservation?
        /// `--label KEY=VALUE`: over the lab file's `labels:` (``RunLabel/merged(file:command:)``).
        public var labels: [RunLabel] = []
        public init() {}

        /// The outcomes `--retry-on` accepts: a pass is never rerun, nor what was not run.
        public static let retryableOutcomes: [TestOutcome] = [.error, .timeout, .failed]
    }

    public let controller: LabController
    public let labFile: String
    public let lab: Lab
    public let options: Options
    /// The run's labels: the lab file's with the command line's over them, decided once here.
    public let labels: [RunLabel]
    let observe: @Sendable (TestRunEvent) -> Void
    /// The host cards the run holds while it runs; every boot passes them on to its lab's supervisor.
    let cardReservation = Mutex<CardReservation?>(nil)

    /// The most retries `--retry-errors` may ask for.
    public static let maximumRetries = 10

    public init(controller: LabController, labFile: String, options: Options, observe: @escaping @Sendable (TestRunEvent) -> Void = { _ in }) throws {
        self.controller = controller
        self.labFile = labFile
        self.lab = try Lab.load(path: labFile)
        self.options = options
        self.labels = RunLabel.merged(file: lab.labels, command: options.labels)
        self.observe = observe
    }

    public func matrix() throws -> TestMatrix {
        try TestMatrix(lab: lab, guests: options.guests, tests: options.tests, devices: options.devices, repeats: options.repeats, shard: options.shard)
    }

    /// A booted guest being tested.
    final class BootedGuest: @unchecked Sendable {
        let guest: LabGuest
        let session: LabSession
        let console: GuestConsole
        /// The agent or the console; a fast revert reconnects the agent.
        var commands: any GuestSession
        let strategy: Strategy
        /// Held until the lab is down.
        let ownership: LabOwnership?
        var freshBoot = true

        init(guest: LabGuest, session: LabSession, console: GuestConsole, commands: any GuestSession, strategy: Strategy, ownership: LabOwnership?) {
            self.guest = guest
            self.session = session
            self.console = console
            self.commands = commands
            self.strategy = strategy
            self.ownership = ownership
        }
    }

    /// Runs the matrix. Throws only for what stops the whole run (a bad
    /// selection, the lab already running); everything else is a result,
    /// cancellation too (``TestReport/wasCancelled``). One job or N, the
    /// matrix runs in one loop (``runMatrix(_:)``).
    public func run() async throws -> TestReport {
        let matrix = try matrix()
        if options.jobs > 1, let obstacle = Self.parallelObstacle(lab: lab, guests: options.guests) {
            throw TestRunError.jobsRefused(obstacle)
        }
        // The lab and its cards are the run's before anything starts (exit 4 when another has them, unless --wait).
        let reservation = try await reserve()
        cardReservation.withLock { $0 = reservation }
        defer { cardReservation.withLock { $0 = nil } }
        if let refusal = try await healthRefusal(reservation) { return refused(matrix, because: refusal) }
        return try await runMatrix(matrix)
    }

    /// "20" for 20 s, "2.5" for 2.5 s.
    static func wholeSeconds(_ seconds: Double) -> String {
        guard seconds.isFinite, abs(seconds) < 1e12 else { return "?" }
        let tenths = Int((seconds * 10).rounded())
        return tenths % 10 == 0 ? String(tenths / 10) : "\(tenths / 10).\(abs(tenths % 10))"
    }

    /// Closes `booted`'s connections and takes lab `name` (default: the lab) down.
    func shutDown(_ booted: BootedGuest?, name: String? = nil) async {
        if let booted {
            booted.commands.close()
            booted.console.close()
            booted.session.close()
        }
        await takeDown(name ?? lab.name, ownership: booted?.ownership)
    }

    /// `down`, run to its end even when the run is cancelled (hurried by a
    /// second stop request); then the lab is let go of.
    func takeDown(_ name: String? = nil, ownership: LabOwnership?) async {
        let (controller, name, stop) = (controller, name ?? lab.name, options.stop)
        _ = await shielded { try? await controller.down(name, stop: stop) }
        ownership?.release()
    }
}

public enum TestRunError: Error, Sendable, CustomStringConvertible {
    case rescanFailed(status: Int32, output: String)
    /// `--jobs N` for a lab that cannot be cloned (``TestRunner/parallelObstacle(lab:guests:)``): bad input.
    case jobsRefused(String)

    public var description: String {
        switch self {
        case .rescanFailed(let status, let output):
            return "the guest's rescan command failed with status \(status): \(output.suffix(300))"
        case .jobsRefused(let why):
            return "--jobs: \(why)"
        }
    }
}

extension TestRunError: ExitStatusCarrying {
    /// 2 for `--jobs` on a lab that cannot be cloned (bad input), 1 otherwise.
    public var exitStatus: ExitStatus {
        if case .jobsRefused = self { return .usage }
        return .failed
    }
}
