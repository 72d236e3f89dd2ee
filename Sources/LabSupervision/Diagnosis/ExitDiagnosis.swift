import Platform

extension Diagnoser {
    /// Why QEMU ended: the catalog applied to the tail of its stderr and to
    /// how it ended (`killed by signal 6 (SIGABRT)` is recognised even when
    /// QEMU printed nothing), one diagnosis per problem. For exit records and
    /// for a result whose QEMU died during a run.
    public static func diagnose(exit: ProcessExit?, qemuOutput: String) -> [Diagnosis] {
        diagnose(qemuOutput + (exit.map { "\nQEMU \($0.description)" } ?? ""))
    }
}

extension ExitRecord {
    /// The last `count` non-empty lines of QEMU's output (for a result or a message).
    public func qemuOutputTail(lines count: Int = 20) -> [String] {
        Array(qemuOutput.split(whereSeparator: \.isNewline).map(String.init).filter { !$0.trimmingSpaces().isEmpty }.suffix(count))
    }
}
