
/// Errors of lab lifecycle commands. Each says what went wrong and what to do.
public enum LabError: ExitStatusCarrying, Sendable, CustomStringConvertible {
    /// Another qlab command holds the lab's lock.
    case busy(String)
    /// The lab belongs to a running command (a `qlab run`): others may not change it.
    case owned(lab: String, owner: LabOwner)
    /// `down --force` asked the lab's owner to stop; it did not end within `seconds`.
    case ownerDidNotStop(lab: String, owner: LabOwner, seconds: Int)
    /// No lab of this name has a record or state here; a near name when there is one.
    case unknownLab(String, suggestion: String? = nil)
    /// QEMU's pid and its supervisor's, when each is alive, and since when the lab runs
    /// (another `qlab up` started it: busy, exit 4).
    case alreadyRunning(lab: String, pid: Int32?, supervisorPID: Int32?, since: Double?)
    case notRunning(String)
    /// `rm` of a lab whose QEMU or supervisor still runs.
    case stillRunning(lab: String, pid: Int32?, supervisorPID: Int32?)
    case deviceInUse(device: String, host: String, otherLab: String)
    /// A host card the lab needs is reserved by another lab (``CardLock``); `holder` names it.
    case cardBusy(card: String, holder: String)
    /// The lab is up (`qlab up`, no owning command) or belongs to another run: `qlab run` cannot have it.
    case labInUse(lab: String, by: String)
    /// Another command uses the lab's serial console (``ConsoleClaim``), which QEMU serves to one client at a time.
    case consoleBusy(lab: String, holder: String)
    /// `--wait DURATION` ran out with the card or lab still held.
    case waitTimedOut(what: String, holder: String, seconds: Double)
    case preflightFailed(lab: String, problems: String)
    /// QEMU did not come up: its own words, qlab's diagnosis.
    case launchFailed(lab: String, exit: String, qemuOutput: String, diagnoses: [Diagnosis])
    case supervisor(String)
    case system(String)

    /// The exit status this error means (README's table): 3 for a lab that is
    /// unknown or not running, 4 for one another command owns, 1 otherwise.
    public var exitStatus: ExitStatus {
        switch self {
        case .unknownLab, .notRunning: return .noSuchLab
        case .busy, .owned, .cardBusy, .labInUse, .alreadyRunning, .consoleBusy: return .busy
        case .ownerDidNotStop, .waitTimedOut: return .timeout
        default: return .failed
        }
    }

    public var description: String {
        switch self {
        case .busy(let path):
            return "another qlab command is working on this lab (lock \(path) is held); wait for it to finish and try again"
        case .owned(let lab, let owner):
            return "lab \(lab) belongs to \(owner.description), which is using it; wait for it to end, or `qlab down --force \(lab)` to stop that run"
        case .ownerDidNotStop(let lab, let owner, let seconds):
            return "lab \(lab): its owner \(owner.description) was asked to stop (SIGTERM, twice) and still runs after \(seconds) s; the lab is left to it"
        case .unknownLab(let name, let suggestion):
            return "no such lab \(name)" + (suggestion.map { " (did you mean \($0)?)" } ?? "")
                + ": give a lab file's path, or a name from `qlab list`"
        case .alreadyRunning(let lab, let pid, let supervisorPID, let since):
            let facts = [pid.map { "QEMU pid \($0)" }, supervisorPID.map { "supervisor pid \($0)" }, since.map { "since \(formatTimestamp($0))" }].compactMap { $0 }
            return "lab \(lab) is already running (\(facts.joined(separator: ", "))); use `qlab down \(lab)` first, or wait for it to go down (`--wait [DURATION]`) (exit 4: busy)"
        case .stillRunning(let lab, let pid, let supervisorPID):
            let pids = [pid.map { "QEMU pid \($0)" }, supervisorPID.map { "supervisor pid \($0)" }].compactMap { $0 }
            return "lab \(lab) is running (\(pids.joined(separator: ", "))); `qlab down \(lab)` first, then `qlab rm \(lab)`"
        case .notRunning(let lab):
            return "lab \(lab) is not running; start it with `qlab up \(lab)` (its last lab file)"
        case .deviceInUse(let device, let host, let otherLab):
            return "device \(device): host device \(host) is already used by running lab \(otherLab); `qlab down \(otherLab)` first"
        case .cardBusy(let card, let holder):
            return "card \(card) is reserved by \(holder); wait for it (`--wait [DURATION]`) or try again later (exit 4: busy, not a test result)"
        case .labInUse(let lab, let by):
            return "lab \(lab) is in use by \(by); wait for it (`--wait [DURATION]`), or take it down (`qlab down \(lab)`) (exit 4: busy, not a test result)"
        case .consoleBusy(let lab, let holder):
            return "the console of lab \(lab) is in use by \(holder) (QEMU serves one console client at a time); wait for it to end and try again (exit 4: busy)"
        case .waitTimedOut(let what, let holder, let seconds):
            return "waited \(formatSeconds(seconds)) s for \(what), still held by \(holder); giving up (exit 124)"
        case .preflightFailed(let lab, let text):
            return "host checks failed for lab \(lab)'s passthrough devices (run `qlab doctor \(lab)` for details, or `qlab up --force`):\n\(text)"
        case .launchFailed(let lab, let exit, let output, let diagnoses):
            var text = "QEMU for lab \(lab) did not start (\(exit)).\nQEMU said:\n"
            text += output.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n")
            if diagnoses.isEmpty {
                text += "\nqlab does not recognise this error; `qlab diagnose` lists what it knows."
            }
            for diagnosis in diagnoses {
                text += "\n\n" + diagnosis.text
            }
            return text
        case .supervisor(let text):
            return "supervisor: \(text)"
        case .system(let text):
            return text
        }
    }
}

/// "90" for 90 s, "1.5" for 1.5 s.
func formatSeconds(_ seconds: Double) -> String {
    seconds == seconds.rounded() && abs(seconds) < 1e12 ? String(Int(seconds)) : String(seconds)
}
