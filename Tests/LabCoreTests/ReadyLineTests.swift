import LabCore
import QMP
import Testing

/// The supervisor's ready line carries QEMU's run state, so `up` needs no second QMP client (issue 11).
@Suite("Supervisor ready line")
struct ReadyLineTests {
    @Test func theRunStateRoundTrips() {
        for status in [VMStatus(status: "prelaunch", running: false), VMStatus(status: "running", running: true)] {
            let line = SupervisorProcess.ReadyLine(qemuPID: 4242, status: status)
            #expect(line.text == "ready 4242 \(status.status) \(status.running)")
            #expect(SupervisorProcess.ReadyLine(line.text) == line)
        }
    }

    /// A line without a state (the supervisor could not ask) still says ready; `up` then asks QEMU itself.
    @Test func aLineWithoutStateOrNotReady() {
        #expect(SupervisorProcess.ReadyLine("ready 17") == SupervisorProcess.ReadyLine(qemuPID: 17, status: nil))
        #expect(SupervisorProcess.ReadyLine("ready 17 running maybe")?.status == nil)
        #expect(SupervisorProcess.ReadyLine("failed") == nil)
        #expect(SupervisorProcess.ReadyLine("ready") == nil)
        #expect(SupervisorProcess.ReadyLine("") == nil)
    }
}
