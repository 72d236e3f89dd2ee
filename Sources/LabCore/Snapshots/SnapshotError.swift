import QMP

/// Why a snapshot operation failed. Each says what to do.
public enum SnapshotError: Error, Sendable, CustomStringConvertible {
    case badTag(HMPValidationError)
    /// No writable qcow2 node: nothing can hold a snapshot.
    case noSnapshotDisk(lab: String)
    case alreadyExists(tag: String, lab: String)
    case notFound(tag: String, available: [String], lab: String)
    /// QEMU failed the operation: its own words (the job's error, HMP's
    /// output, and what it wrote to its log meanwhile) and qlab's diagnosis.
    case failed(operation: String, tag: String, qemuText: String, vmStatus: String?, diagnoses: [Diagnosis])
    /// The job did not conclude in time.
    case timedOut(operation: String, tag: String, waited: Duration, lab: String)
    /// The snapshot operation succeeded but a device could not be attached back.
    case reattachFailed(operation: String, tag: String, device: String, error: String)

    public var description: String {
        switch self {
        case .badTag(let error):
            return "bad snapshot tag: \(error.reason) (got \"\(error.value)\")"
        case .noSnapshotDisk(let lab):
            return "lab \(lab) has no writable qcow2 disk to hold snapshots; give its guest a `disk:` (a qcow2 base image; qlab adds the overlay)"
        case .alreadyExists(let tag, let lab):
            return "a snapshot '\(tag)' exists already; delete it first (`qlab snapshot delete \(lab) \(tag)`) or save with --replace"
        case .notFound(let tag, let available, let lab):
            return "no snapshot '\(tag)'" + (available.isEmpty ? " (the lab has none; `qlab snapshot save \(lab) \(tag)` makes one)" : "; the lab has: \(available.joined(separator: ", "))")
        case .failed(let operation, let tag, let text, let status, let diagnoses):
            var lines = ["\(operation) '\(tag)' failed. QEMU said:"]
            lines += text.split(separator: "\n", omittingEmptySubsequences: true).map { "  " + $0 }
            if let status, status != "running", status != "paused" {
                lines.append("The VM is now \(status): load a good snapshot or reset the lab (`qlab reset`) before going on.")
            }
            var text = lines.joined(separator: "\n")
            for diagnosis in diagnoses { text += "\n\n" + diagnosis.text }
            return text
        case .timedOut(let operation, let tag, let waited, let lab):
            return "\(operation) '\(tag)' did not finish within \(formatMilliseconds(waited)); check `qlab qmp \(lab) query-jobs`"
        case .reattachFailed(let operation, let tag, let device, let error):
            return "\(operation) '\(tag)' succeeded, but device \(device) could not be attached back: \(error)"
        }
    }

    public var diagnoses: [Diagnosis] {
        if case .failed(_, _, _, _, let diagnoses) = self { return diagnoses }
        return []
    }
}

extension SnapshotError: ExitStatusCarrying {
    /// 2 for a tag that is not one (what was typed), 1 otherwise.
    public var exitStatus: ExitStatus {
        if case .badTag = self { return .usage }
        return .failed
    }
}
