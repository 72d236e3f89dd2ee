import ArgumentParser
import Foundation
import LabCore
import QMP
import Synchronization

/// `up` runs each lab's supervisor as `qlab-supervisor` next to this binary, else `qlab _supervise`.
func labController() -> LabController {
    let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return LabController(supervisorExecutable: executable)
}

struct UpCommand: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "up", abstract: "Start a lab's QEMU under a supervisor; returns once QMP answers.")

    @Argument(help: "The lab file, or the name of a lab started before (its last lab file).", completion: Completions.lab) var lab: String
    @Option(help: "The guest to boot (default: the lab's only or first guest).") var guest: String?
    @Flag(help: "Stay attached: supervise in this process, take QEMU down on SIGINT/SIGTERM/SIGHUP.") var foreground = false
    @Flag(help: "Launch even when host checks for passthrough devices fail.") var force = false
    @Flag(help: "Start with the guest's CPUs stopped (-S).") var paused = false
    @Flag(help: "Replace the guest disk overlay with a fresh one (drops its snapshots).") var freshDisk = false
    @Flag(help: "Print the started lab as JSON (with --foreground: one JSON line when up, one when QEMU exits).") var json = false
    @OptionGroup var wait: WaitOptions
    @Flag(help: "Return once the guest is ready (its ready text, login, a shell that answers), within its boot_timeout; 124 when it is not.")
    var waitReady = false

    func validate() throws {
        if waitReady && foreground { throw ValidationError("--wait-ready returns once the guest is ready; --foreground stays attached: give one") }
        if waitReady && paused { throw ValidationError("--wait-ready: a guest started with --paused does not boot until `qlab qmp LAB cont`; give one") }
    }

    func run() async throws {
        let controller = labController()
        let options = {
            var options = LabController.UpOptions(guest: guest, force: force, paused: paused, freshDisk: freshDisk)
            options.wait = wait.policy
            options.onWait = { reportError("qlab up: " + $0) }
            return options
        }()
        do {
            let lab = try LabRuntime.labFile(for: self.lab)
            if foreground {
                // SIGINT/SIGTERM/SIGHUP: QEMU is asked to quit (a second signal
                // kills it); nothing is left; exit 130/143/129.
                let (lab, json) = (lab, json)
                try await runCancellable("up") { stop in
                    // Under systemd (Type=notify): STOPPING=1 once we are on the way down.
                    let stopping = Once()
                    let notifyStopping: @Sendable () -> Void = { stopping.run { SystemdNotify.notify("STOPPING=1") } }
                    stop.onRequest { _ in notifyStopping() }
                    let exit = try await controller.upForeground(labFile: lab, options: options, stop: stop) { record in
                        if json {
                            try? printJSONLine(.object(record.upJSON))
                        } else {
                            print(UpCommand.describe(record))
                        }
                        // Whoever waits on this line (a script, a test) gets it now, not at exit.
                        fflush(nil)
                        SystemdNotify.notify("READY=1\nMAINPID=\(getpid())\nSTATUS=lab \(record.name) up: QEMU pid \(record.qemuPID)")
                    }
                    notifyStopping()
                    if json {
                        try printJSONLine(["exit": exit.outputJSON])
                    } else {
                        print("lab QEMU \(exit.exitDescription)")
                    }
                    if exit.crashed && !stop.isRequested { throw Reported(.failed) }
                }
            } else {
                let result = try await controller.up(labFile: lab, options: options)
                if !json { print(UpCommand.describe(result.record) + ", \(result.status.status)") }
                // The lab stays up whether or not its guest gets ready: `qlab down` takes it down.
                var readiness: GuestConsole.Readiness?
                if waitReady {
                    readiness = try await Self.waitReady(result.record, runtime: result.runtime)
                    if !json { print(String(format: "guest %@ ready after %.1f s", result.record.guest, readiness!.waited.inSeconds)) }
                }
                if json {
                    var document = result.json
                    if let readiness, case .object(var object) = document {
                        object["ready_seconds"] = .double((readiness.waited.inSeconds * 1000).rounded() / 1000)
                        document = .object(object)
                    }
                    try printJSON(document)
                }
            }
        } catch let error as Reported {
            throw error
        } catch {
            throw Reported("up", error)
        }
    }

    /// `--wait-ready`: the guest's boot keys and firmware text (``GuestBootWait``),
    /// its ready text (then login and a shell that answers) on its console, within
    /// its `boot_timeout`; cancellable (Ctrl-C: 130).
    static func waitReady(_ record: LabRecord, runtime: LabRuntime) async throws -> GuestConsole.Readiness {
        let readiness = Mutex<GuestConsole.Readiness?>(nil)
        try await runCancellable("up") { _ in
            do {
                let begin = ContinuousClock.now
                let guest = try record.lab().selectGuest(record.guest)
                let console = try GuestConsole.connect(runtime: runtime)
                defer { console.close() }
                // QMP only for a boot watched on the screen: QEMU serves one QMP client at a time.
                let session = GuestBootWait.usesScreen(guest) ? try await LabSession.open(runtime: runtime) : nil
                defer { session?.close() }
                let ready = try await GuestBootWait.untilReady(guest, session: session, console: console, since: begin)
                readiness.withLock { $0 = ready }
            } catch where !Task.isCancelled {
                throw Reported("up", error)
            }
        }
        guard let ready = readiness.withLock({ $0 }) else { throw Reported(.failed) }
        return ready
    }

    static func describe(_ record: LabRecord) -> String {
        "lab \(record.name) up: guest \(record.guest), QEMU pid \(record.qemuPID), supervisor pid \(record.supervisorPID), accel \(record.accel.accelerator.rawValue) (\(record.accel.reason))"
    }
}

struct DownCommand: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "down", abstract: "Stop a lab: quit, then SIGTERM, then SIGKILL; clean up. Idempotent.")

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
    @Flag(help: "Print {\"name\", \"outcome\", \"method\", \"problem\"} as JSON.") var json = false
    @Flag(help: "Stop the command that owns the lab (a `qlab run` using it: it ends as cancelled, reports written), then take the lab down.")
    var force = false

    func run() async throws {
        do {
            let runtime = try LabRuntime.locateExisting(lab)
            let outcome = try await labController().down(runtime.name, force: force) { owner in
                reportError("qlab down: lab \(runtime.name) belongs to \(owner.description): asking it to stop (SIGTERM) and waiting for it")
            }
            if json {
                try printJSON(outcome.json(lab: runtime.name))
                return
            }
            switch outcome {
            case .notRunning: print("lab \(runtime.name) is not running")
            case .cleanedUp: print("lab \(runtime.name): QEMU was already gone; cleaned up")
            case .stopped("owner"): print("lab \(runtime.name) down (its owner ended its run and took it down)")
            case .stopped(let method): print("lab \(runtime.name) down (\(method))")
            case .unreadableRecord(let problem, let method):
                reportError("qlab down: \(problem)")
                print("lab \(runtime.name): record unreadable; " + (method.map { "QEMU found by its pid file and stopped (\($0))" } ?? "no QEMU of it runs") + "; cleaned up")
            }
        } catch {
            throw Reported("down", error)
        }
    }
}

struct StatusCommand: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a lab's state (running, paused, stopped, crashed), or every lab's.")

    @Argument(help: "The lab name or file (default: all labs).", completion: Completions.lab) var lab: String?
    @Flag(help: "JSON output.") var json = false

    func run() async throws {
        let controller = labController()
        var statuses: [LabController.Status]
        do {
            if let lab {
                statuses = [try await controller.status(try LabRuntime.locateExisting(lab).name)]
            } else {
                statuses = try await controller.list()
            }
        } catch {
            throw Reported("status", error)
        }
        if json {
            try printJSON(lab == nil ? .array(statuses.map(\.json)) : statuses[0].json)
            return
        }
        if statuses.isEmpty { print("no labs") }
        for status in statuses { print(TerminalText.neutralised(Self.text(status))) }
        // A record qlab cannot read is not a state it can vouch for.
        if statuses.contains(where: { $0.state == .unreadable }) { throw Reported(.failed) }
    }

    static func text(_ status: LabController.Status) -> String {
        var lines = ["\(status.name): \(status.state.rawValue)"]
        if let problem = status.problem { lines.append("  record: \(problem)") }
        if let record = status.record {
            lines.append("  QEMU pid \(record.qemuPID) (supervisor pid \(record.supervisorPID)), guest \(record.guest), QEMU state \(status.vmStatus ?? "unknown (monitor busy)")")
            lines.append("  accel \(record.accel.accelerator.rawValue): \(record.accel.reason)")
            if let revert = record.revert {
                let mapped = revert.mappedSnapshot.map { "; QEMU maps snapshot \($0)'s RAM image copy-on-write" } ?? ""
                lines.append("  revert \(revert.method.rawValue): \(revert.reason)\(mapped)")
            }
            if let owner = record.owner, owner.isAlive { lines.append("  owned by \(owner.description)") }
            if let uptime = status.uptime { lines.append("  up \(Int(uptime)) s" + (status.supervised ? "" : " (supervisor gone: `qlab down` still stops it)")) }
            if !record.devices.isEmpty {
                lines.append("  devices: " + record.devices.map { "\($0.name) (\($0.state))" }.joined(separator: ", "))
            }
        }
        if let exit = status.lastExit {
            lines.append("  last exit: QEMU \(exit.exitDescription)\(exit.requested ? " (requested)" : "")")
            for diagnosis in exit.diagnoses { lines.append("  last error: [\(diagnosis.id)] \(diagnosis.summary)\n    fix: \(diagnosis.fix)") }
            if exit.diagnoses.isEmpty, exit.crashed, !exit.qemuOutput.isEmpty {
                lines.append("  QEMU said: " + exit.qemuOutput.split(separator: "\n").suffix(3).joined(separator: " | "))
            }
        }
        return lines.joined(separator: "\n")
    }
}

struct ListCommand: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List labs and their states.")
    @Flag(help: "JSON output.") var json = false

    func run() async throws {
        let statuses: [LabController.Status]
        do {
            statuses = try await labController().list()
        } catch {
            throw Reported("list", error)
        }
        if json {
            try printJSON(.array(statuses.map(\.json)))
            return
        }
        if statuses.isEmpty { print("no labs") }
        for status in statuses {
            let pid = status.record.map { "pid \($0.qemuPID)" } ?? ""
            print("\(status.name.padding(toLength: 20, withPad: " ", startingAt: 0)) \(status.state.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)) \(pid)")
        }
    }
}

/// Hidden: the supervisor process `up` starts.
struct SuperviseCommand: AsyncParsableCommand, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(commandName: "_supervise", shouldDisplay: false)
    @Argument var spec: String
    @Option var readyFd: Int32
    /// The owner pipe's read end (see LabOwnership): watched until ready.
    @Option var ownerFd: Int32?
    /// The lab belongs to the owner: watched for the lab's whole life.
    @Flag var owned = false

    func run() async throws {
        let arguments = SupervisorProcess.Arguments(specPath: spec, readyFD: readyFd, ownerFD: ownerFd, owned: owned)
        let status = await SupervisorProcess.run(arguments, program: "qlab _supervise")
        if status != ExitStatus.success.rawValue { throw Reported(ExitStatus(rawValue: status) ?? .failed) }
    }
}

struct RemoveCommand: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove a stopped lab's state: overlays, logs, event log and records (`down` it first).",
        discussion: """
            --all removes every stopped lab's state and keeps the running ones (and any a running \
            command owns or holds), naming them on stderr; exit 0 when every stopped lab went, 4 \
            when a lab was kept because another command held it, 1 when a removal failed.
            """)

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String?
    @Flag(help: "Remove every stopped lab; running ones are kept.") var all = false
    @Flag(help: "Print {\"name\", \"removed_anything\", \"bytes\"} as JSON (with --all: {\"removed\": [...], \"kept\": [...], \"failed\": [...]}).") var json = false

    func validate() throws {
        if all && lab != nil { throw ValidationError("give a lab or --all, not both") }
        if !all && lab == nil { throw ValidationError("give the lab to remove (a name from `qlab list`, or its file), or --all") }
    }

    func run() async throws {
        if all { return try await removeAll() }
        do {
            let runtime = try LabRuntime.locateExisting(lab!)
            let removal = try await labController().remove(runtime.name)
            if json { return try printJSON(removal.json) }
            print("lab \(removal.name) removed (\(ByteSize(bytes: UInt64(removal.bytes)).humanReadable) of state)")
        } catch {
            throw Reported("rm", error)
        }
    }

    func removeAll() async throws {
        let outcomes: [(name: String, outcome: LabController.RemovalOutcome)]
        do { outcomes = try await labController().removeAll() } catch {
            throw Reported("rm", error)
        }
        var removed: [JSONValue] = [], kept: [JSONValue] = [], failed: [JSONValue] = []
        var status = ExitStatus.success
        for (name, outcome) in outcomes {
            switch outcome {
            case .removed(let removal):
                removed.append(removal.json)
                if !json { print("lab \(name) removed (\(ByteSize(bytes: UInt64(removal.bytes)).humanReadable) of state)") }
            case .kept(let error):
                kept.append(["name": .string(name), "reason": .string(error.description)])
                if case .stillRunning = error {
                    reportError("qlab rm: kept lab \(name): it is running (`qlab down \(name)` first)")
                } else {
                    reportError("qlab rm: kept lab \(name): \(error)")
                    status = .busy
                }
            case .failed(let error):
                failed.append(["name": .string(name), "error": .string("\(error)")])
                reportError("qlab rm: lab \(name): \(error)")
                status = .failed
            }
        }
        if json {
            try printJSON(["removed": .array(removed), "kept": .array(kept), "failed": .array(failed)])
        } else if outcomes.isEmpty {
            print("no labs")
        }
        if status != .success { throw Reported(status) }
    }
}

/// Runs its body the first time only (from any thread).
final class Once: Sendable {
    private let done = Mutex(false)

    func run(_ body: () -> Void) {
        if done.withLock({ done in defer { done = true }; return !done }) { body() }
    }
}
