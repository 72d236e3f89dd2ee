#if canImport(Glibc)
import Glibc
#endif
import LabSupervision

// Errors only, unless qlab passed a level down (QLAB_LOG_LEVEL, from `qlab -v`/`--log-level`).
LabSupervisionLog.bootstrap(
    level: getenv(LabSupervisionLog.environmentVariable).flatMap { LabSupervisionLog.level(String(cString: $0)) } ?? .error)

// qlab-supervisor: the process that owns one lab's QEMU, started by `qlab up`
// (`_supervise SPEC --ready-fd N [--owner-fd N] [--owned]`). It links only
// LabSupervision and QMP, no Foundation, to keep its memory small.
switch SupervisorProcess.Arguments.parse(Array(CommandLine.arguments.dropFirst())) {
case .failure(let error):
    SupervisorProcess.report(STDERR_FILENO, "qlab-supervisor: \(error)")
    exit(ExitStatus.usage.rawValue)
case .success(let arguments):
    exit(await SupervisorProcess.run(arguments, program: "qlab-supervisor"))
}
