import Platform
import QMP

/// The detached supervisor process that `qlab up` starts: the body of both
/// `qlab-supervisor` and the hidden `qlab _supervise`.
///
/// Its command line is `_supervise SPEC --ready-fd N [--owner-fd N] [--owned]`
/// for both executables: ``LabRuntime/liveSupervisor(_:)`` recognises a
/// supervisor by `_supervise` and the launch spec's path in its argv.
public enum SupervisorProcess {
    /// What `up` passes.
    public struct Arguments: Sendable, Equatable {
        public var specPath: String
        public var readyFD: Int32
        public var ownerFD: Int32?
        public var owned: Bool

        public init(specPath: String, readyFD: Int32, ownerFD: Int32? = nil, owned: Bool = false) {
            self.specPath = specPath
            self.readyFD = readyFD
            self.ownerFD = ownerFD
            self.owned = owned
        }

        /// The lab's card locks (``CardLock``), inherited from `up`: kept, and handed on to every QEMU.
        public var cardFDs: [Int32] = []

        /// The arguments after the executable's name.
        public var argv: [String] {
            ["_supervise", specPath, "--ready-fd", String(readyFD)] + (ownerFD.map { ["--owner-fd", String($0)] } ?? []) + (owned ? ["--owned"] : [])
                + cardFDs.flatMap { ["--card-fd", String($0)] }
        }

        /// Parses ``argv``; nil (with a message) for anything else.
        public static func parse(_ argv: [String]) -> Result<Arguments, LabError> {
            var rest = argv[...]
            guard rest.popFirst() == "_supervise", let spec = rest.popFirst(), !spec.hasPrefix("-") else {
                return .failure(.supervisor("usage: qlab-supervisor _supervise SPEC --ready-fd N [--owner-fd N] [--owned] [--card-fd N ...]"))
            }
            var ready: Int32?
            var owner: Int32?
            var owned = false
            var cards: [Int32] = []
            while let option = rest.popFirst() {
                switch option {
                case "--card-fd":
                    guard let value = rest.popFirst().flatMap({ Int32($0) }), value >= 0 else {
                        return .failure(.supervisor("\(option) needs a descriptor number"))
                    }
                    cards.append(value)
                case "--ready-fd", "--owner-fd":
                    guard let value = rest.popFirst().flatMap({ Int32($0) }), value >= 0 else {
                        return .failure(.supervisor("\(option) needs a descriptor number"))
                    }
                    if option == "--ready-fd" { ready = value } else { owner = value }
                case "--owned":
                    owned = true
                default:
                    return .failure(.supervisor("unknown argument \(option)"))
                }
            }
            guard let ready else { return .failure(.supervisor("--ready-fd is required")) }
            var arguments = Arguments(specPath: spec, readyFD: ready, ownerFD: owner, owned: owned)
            arguments.cardFDs = cards
            return .success(arguments)
        }
    }

    /// Reads the launch spec, launches QEMU, reports "ready PID" or "failed"
    /// on the ready descriptor, then watches QEMU until it ends. Returns the
    /// process's exit status.
    public static func run(_ arguments: Arguments, program: String) async -> Int32 {
        let launch: LaunchSpec
        do { launch = try LaunchSpec.read(path: arguments.specPath) } catch {
            printError("\(program): \(error)")
            return ExitStatus.failed.rawValue
        }
        Signal.hangUp.ignore()
        Signal.pipe.ignore()
        let supervisor = Supervisor(spec: launch, ownerFD: arguments.ownerFD, ownedForLife: arguments.owned, cardFDs: arguments.cardFDs)
        let (readiness, child, client) = await supervisor.launch()
        switch readiness {
        case .failed:
            report(arguments.readyFD, "failed")
        case .ready(let pid):
            // QEMU's run state goes with the ready line, so `up` need not
            // connect a second QMP client just to ask for it.
            let status = (try? await client?.queryStatus()).flatMap { $0 }
            report(arguments.readyFD, ReadyLine(qemuPID: pid, status: status).text)
            if let child, let client { _ = await supervisor.watch(child: child, client: client) }
        }
        return ExitStatus.success.rawValue
    }

    /// The supervisor's report on the ready pipe: `ready PID [STATUS RUNNING]`
    /// (QEMU's `query-status`: e.g. `ready 4242 prelaunch false`), or `failed`.
    public struct ReadyLine: Sendable, Hashable {
        public var qemuPID: Int32
        public var status: VMStatus?

        public init(qemuPID: Int32, status: VMStatus?) {
            self.qemuPID = qemuPID
            self.status = status
        }

        public var text: String {
            "ready \(qemuPID)" + (status.map { " \($0.status) \($0.running)" } ?? "")
        }

        /// nil for anything but a ready line; the status is nil when the line has none.
        public init?(_ line: String) {
            let words = line.split(separator: " ")
            guard words.first == "ready", words.count >= 2, let pid = Int32(words[1]) else { return nil }
            qemuPID = pid
            status = words.count >= 4 && (words[3] == "true" || words[3] == "false")
                ? VMStatus(status: String(words[2]), running: words[3] == "true") : nil
        }
    }

    /// One line to `up` on the ready pipe, then the pipe is closed.
    public static func report(_ fd: Int32, _ line: String) {
        let descriptor = FileDescriptor(rawValue: fd)
        try? descriptor.writeEvery(Array((line + "\n").utf8), what: "the ready pipe")
        descriptor.closeIgnoringErrors()
    }

    static func printError(_ line: String) {
        try? FileDescriptor.standardError.writeEvery(Array((line + "\n").utf8), what: "standard error")
    }
}
