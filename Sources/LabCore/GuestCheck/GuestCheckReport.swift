import QMP

/// One step of `qlab guest check`, as planned (before it runs).
public enum GuestCheckStepKind: Sendable, Hashable {
    case machine, console, ready, login, prompt
    case exitStatus, output, longLine, quoting, interrupt
    case agent
    case snapshot, reset
    case attach(device: String, atBoot: Bool)
    /// The profile's rescan command, once all hotplug devices are attached (as a run does).
    case rescan
    /// The SCSI disks of every lab device, in the guest's own listing.
    case disks
    case unplug(device: String)

    /// The step's id in JSON: the same for every device (the device is a field of its own).
    public var id: String {
        switch self {
        case .machine: return "machine"
        case .console: return "console"
        case .ready: return "ready"
        case .login: return "login"
        case .prompt: return "prompt"
        case .exitStatus: return "exit_status"
        case .output: return "output"
        case .longLine: return "long_line"
        case .quoting: return "quoting"
        case .interrupt: return "interrupt"
        case .agent: return "agent"
        case .snapshot: return "snapshot"
        case .reset: return "reset"
        case .attach(_, let atBoot): return atBoot ? "device_at_boot" : "device_hotplug"
        case .rescan: return "rescan"
        case .disks: return "scsi_disks"
        case .unplug: return "device_unplug"
        }
    }

    /// The lab device the step is about, if any.
    public var device: String? {
        switch self {
        case .attach(let device, _), .unplug(let device): return device
        default: return nil
        }
    }

    /// What the step checks, for its line.
    public var title: String {
        switch self {
        case .machine: return "firmware and machine start"
        case .console: return "serial console shows output"
        case .ready: return "ready text within boot_timeout"
        case .login: return "console login"
        case .prompt: return "shell prompt matches"
        case .exitStatus: return "command exit status"
        case .output: return "command output"
        case .longLine: return "long command line"
        case .quoting: return "command with quotes"
        case .interrupt: return "Ctrl-C recovery"
        case .agent: return "guest agent"
        case .snapshot: return "snapshot and revert"
        case .reset: return "reset to ready"
        case .attach(let device, let atBoot): return atBoot ? "\(device): attached at boot" : "\(device): hotplug"
        case .rescan: return "rescan after hotplug"
        case .disks: return "SCSI disks visible in the guest"
        case .unplug(let device): return "\(device): unplug, guest survives"
        }
    }
}

/// PASS, FAIL or SKIP.
public enum GuestCheckStatus: String, Sendable, Hashable {
    case pass, fail, skip
}

/// What one step of `qlab guest check` found.
public struct GuestCheckStep: Sendable {
    public var kind: GuestCheckStepKind
    public var status: GuestCheckStatus
    /// False for a step the guest does not need (no `login:`, no rescan
    /// command in its profile, a device attached at boot has no unplug): its
    /// SKIP does not make the guest unready.
    public var required: Bool
    /// What was seen, or why it failed or was skipped.
    public var detail: String
    /// What to do about a failure (the OS's recipe line for a silent console).
    public var hint: String?
    public var diagnoses: [Diagnosis]
    /// The console's last lines when the step failed.
    public var consoleTail: String?
    public var seconds: Double

    public init(kind: GuestCheckStepKind, status: GuestCheckStatus, required: Bool = true, detail: String, hint: String? = nil,
                diagnoses: [Diagnosis] = [], consoleTail: String? = nil, seconds: Double = 0) {
        self.kind = kind
        self.status = status
        self.required = required
        self.detail = detail
        self.hint = hint
        self.diagnoses = diagnoses
        self.consoleTail = consoleTail
        self.seconds = seconds
    }

    /// `{"id", "device", "title", "status", "required", "detail", "hint", "seconds", "diagnoses", "console_tail"}`.
    public var json: JSONValue {
        [
            "id": .string(kind.id), "device": kind.device.map(JSONValue.string) ?? .null, "title": .string(kind.title),
            "status": .string(status.rawValue), "required": .bool(required), "detail": .string(detail),
            "hint": hint.map(JSONValue.string) ?? .null, "seconds": .seconds(seconds),
            "diagnoses": .array(diagnoses.map(\.json)), "console_tail": consoleTail.map(JSONValue.string) ?? .null,
        ]
    }
}

/// What `qlab guest check` found: every planned step with its result.
public struct GuestCheckReport: Sendable {
    public var lab: String
    public var labFile: String
    public var guest: String
    public var os: GuestOS
    public var strategy: Strategy
    public var startedAt: Double
    public var duration: Double
    public var steps: [GuestCheckStep]
    /// A boot wait (console output, ready text) ran out of `boot_timeout`.
    public var bootTimedOut: Bool
    public var cancelled: Bool

    /// Ready for `qlab run`: no step failed and no required step was skipped.
    public var ready: Bool {
        !cancelled && !steps.contains { $0.status == .fail || ($0.status == .skip && $0.required) }
    }

    /// 0 ready; 124 when the guest did not boot within `boot_timeout`; 1 otherwise
    /// (a cancelled check exits with its signal's code, which the caller knows).
    public var exitStatus: ExitStatus {
        if ready { return .success }
        return bootTimedOut ? .timeout : .failed
    }

    public func count(_ status: GuestCheckStatus) -> Int { steps.filter { $0.status == status }.count }

    /// `guest linux is ready for qlab run: 17 passed, 2 skipped (not needed)`.
    public var summaryLine: String {
        var parts = ["\(count(.pass)) passed"]
        if count(.fail) > 0 {
            parts.append("\(count(.fail)) failed (" + steps.filter { $0.status == .fail }.map(\.kind.title).joined(separator: ", ") + ")")
        }
        if count(.skip) > 0 { parts.append("\(count(.skip)) skipped") }
        let verdict = cancelled ? "check cancelled" : ready ? "is ready for qlab run" : "is NOT ready for qlab run"
        return "guest \(guest) (\(os.rawValue)) \(verdict): " + parts.joined(separator: ", ")
    }

    /// The document `qlab guest check --json` prints (docs/json.md).
    public var json: JSONValue {
        [
            "lab": .string(lab), "lab_file": .string(labFile), "guest": .string(guest), "os": .string(os.rawValue),
            "strategy": .string(strategy.rawValue),
            "started_at": .timestamp(startedAt), "started_at_seconds": .seconds(startedAt), "duration_seconds": .seconds(duration),
            "ready": .bool(ready), "cancelled": .bool(cancelled), "boot_timed_out": .bool(bootTimedOut),
            "passed": JSONValue(count(.pass)), "failed": JSONValue(count(.fail)), "skipped": JSONValue(count(.skip)),
            "summary": .string(summaryLine), "steps": .array(steps.map(\.json)),
        ]
    }
}
