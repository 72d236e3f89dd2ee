import QMP

extension QMPError: ExitStatusCarrying {
    /// 124 when QEMU did not reply in time, 1 otherwise (the QMP module knows no exit codes).
    public var exitStatus: ExitStatus {
        if case .timeout = self { return .timeout }
        return .failed
    }
}
