import Platform
import QMP

// The JSON of each command's result (docs/json.md): built here, printed by
// the CLI's `--json`. Durations and times go through `JSONValue.seconds`
// and `JSONValue.timestamp`.

extension StepTimings {
    /// `[{"name": "device_add scsi-am", "seconds": 0.002}]`, in order.
    public var json: JSONValue {
        .array(steps.map { ["name": .string($0.name), "seconds": .seconds($0.duration)] })
    }
}

extension PCIPlacement {
    /// `{"bus": "qlab-pcibr0", "addr": "0x1"}` (`addr` null when QEMU picks the slot).
    public var json: JSONValue {
        ["bus": .string(bus), "addr": addr.map { .string($0.description) } ?? .null]
    }
}

extension LabRecord {
    /// What `up` reports about the lab it started (the record's public part).
    public var upJSON: JSONObject {
        [
            "name": .string(name), "lab_file": .string(labFile), "guest": .string(guest),
            "qemu_pid": JSONValue(qemuPID), "supervisor_pid": JSONValue(supervisorPID),
            "started_at": .timestamp(startedAt), "started_at_seconds": .seconds(startedAt),
            "accel": ["accelerator": .string(accel.accelerator.rawValue), "reason": .string(accel.reason)],
            "console_log": consoleLog.map(JSONValue.string) ?? .null,
            "devices": .array(devices.map { ["name": .string($0.name), "state": .string($0.state.rawValue)] }),
            "revert": revert.map { revert -> JSONValue in
                [
                    "method": .string(revert.method.rawValue), "reason": .string(revert.reason),
                    "ram_directory": revert.ramDirectory.map(JSONValue.string) ?? .null,
                    "mapped_snapshot": revert.mappedSnapshot.map(JSONValue.string) ?? .null,
                ]
            } ?? .null,
            "owner": owner.map { owner -> JSONValue in
                ["command": .string(owner.command), "pid": JSONValue(owner.pid), "since": .timestamp(owner.since)]
            } ?? .null,
        ]
    }
}

extension LabController.UpResult {
    /// The started lab and QEMU's run state (`running`, `prelaunch` with --paused).
    public var json: JSONValue {
        var object = record.upJSON
        object["vm_status"] = .string(status.status)
        return .object(object)
    }
}

extension ExitRecord {
    /// How QEMU ended, for `status` and `up --foreground` (the stored
    /// last-exit.json keeps its own shape).
    public var outputJSON: JSONValue {
        var object: JSONObject = ["ended_at": .timestamp(at), "ended_at_seconds": .seconds(at), "requested": .bool(requested)]
        switch exit {
        case .exited(let code):
            object["exit_code"] = JSONValue(code)
            object["signal"] = .null
            object["signal_name"] = .null
        case .signaled(let signal):
            object["exit_code"] = .null
            object["signal"] = JSONValue(signal)
            object["signal_name"] = .string(signalName(signal))
        case nil:
            object["exit_code"] = .null
            object["signal"] = .null
            object["signal_name"] = .null
        }
        object["crashed"] = .bool(crashed)
        object["description"] = .string(exitDescription)
        object["qemu_output"] = .string(qemuOutput)
        object["diagnoses"] = .array(diagnoses.map(\.json))
        return .object(object)
    }
}

extension LabController.DownOutcome {
    /// `{"name", "outcome": "stopped"|"not_running"|"cleaned_up"|"unreadable_record", "method", "problem"}`:
    /// `method` is how QEMU was stopped (quit, SIGTERM, SIGKILL, or `owner`: the
    /// `qlab run` owning it, asked to stop by `down --force`, took it down), null unless stopped;
    /// `problem` what is wrong with a record that does not decode, else null.
    public func json(lab: String) -> JSONValue {
        switch self {
        case .notRunning: return ["name": .string(lab), "outcome": "not_running", "method": nil, "problem": nil]
        case .cleanedUp: return ["name": .string(lab), "outcome": "cleaned_up", "method": nil, "problem": nil]
        case .stopped(let method): return ["name": .string(lab), "outcome": "stopped", "method": .string(method), "problem": nil]
        case .unreadableRecord(let problem, let method):
            return ["name": .string(lab), "outcome": "unreadable_record", "method": method.map(JSONValue.string) ?? .null, "problem": .string(problem)]
        }
    }
}

extension LabController.Removal {
    public var json: JSONValue {
        ["name": .string(name), "removed_anything": .bool(removedAnything), "bytes": JSONValue(bytes)]
    }
}

extension AttachResult {
    public var json: JSONValue {
        [
            "device": .string(device), "driver": .string(driver), "placement": placement.json,
            "device_ids": .array(deviceIDs.map(JSONValue.string)),
            "overlays": .array(overlays.sorted { $0.key < $1.key }.map { ["disk": .string($0.key), "path": .string($0.value)] }),
            "duration_seconds": .seconds(timings.total), "steps": timings.json,
        ]
    }
}

extension DetachResult {
    /// `method`: guest, reset-after-timeout, reset-after-guest-error,
    /// reset-vm-not-running, reset-requested or already-gone.
    public var json: JSONValue {
        [
            "device": .string(device), "method": .string(method.rawValue), "used_reset": .bool(method.usedReset),
            "description": .string(method.description), "unplug_seconds": .seconds(unplugTime),
            "removed_overlays": .array(removedOverlays.map(JSONValue.string)),
            "duration_seconds": .seconds(timings.total), "steps": timings.json,
        ]
    }
}

extension ResetResult {
    public var json: JSONValue {
        [
            "completed_unplugs": .array(completedUnplugs.map(JSONValue.string)),
            "duration_seconds": .seconds(timings.total), "steps": timings.json,
        ]
    }
}

extension SnapshotResult {
    /// `duration_seconds`: the snapshot operation itself (`via`); `steps` has
    /// every step, the unplugs and re-attaches included.
    public var json: JSONValue {
        return [
            "operation": .string(operation), "tag": .string(tag), "via": .string(via),
            "method": .string(method.rawValue), "method_reason": .string(methodReason),
            "duration_seconds": .seconds(operationTime), "total_seconds": .seconds(timings.total),
            "detached": .array(detached.map(\.json)), "reattached": .array(reattached.map(\.json)),
            "steps": timings.json,
        ]
    }
}

extension GuestCommandResult {
    /// `error_output` is null over the console (one stream there).
    public var json: JSONValue {
        [
            "exit_status": JSONValue(exitStatus), "output": .string(output),
            "error_output": errorOutput.map(JSONValue.string) ?? .null,
            "truncated": .bool(truncated), "duration_seconds": .seconds(duration),
        ]
    }
}

extension VFIOBinder.Step {
    public var json: JSONValue { ["address": .string(address.description), "summary": .string(summary)] }
}

extension NestedScenario {
    /// What `qlab nested list --json` prints per scenario.
    public var json: JSONValue {
        ["id": .string(id), "title": .string(title), "boot": .string(boot), "proves": .string(proves)]
    }
}
