import LabSupervision
import Platform

// Errors only, unless qlab passed a level down (QLAB_LOG_LEVEL, from `qlab -v`/`--log-level`).
LabSupervisionLog.bootstrap(
    level: ThisProcess.environment(LabSupervisionLog.environmentVariable).flatMap(LabSupervisionLog.level) ?? .error)

// qlab-supervisor: the process that owns one lab's QEMU, started by `qlab up`
// (`_supervise SPEC --ready-fd N [--owner-fd N] [--owned]`). It links only
// LabSupervision and QMP, no Foundation, to keep its memory small.
switch SupervisorProcess.Arguments.parse(Array(CommandLine.arguments.dropFirst())) {
case .failure(let error):
    SupervisorProcess.report(FileDescriptor.standardError.rawValue, "qlab-supervisor: \(error)")
    ThisProcess.exit(ExitStatus.usage.rawValue)
case .success(let arguments):
    ThisProcess.exit(await SupervisorProcess.run(arguments, program: "qlab-supervisor"))
}
