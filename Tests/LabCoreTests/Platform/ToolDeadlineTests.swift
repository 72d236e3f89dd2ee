import Foundation
@testable import LabCore
import Platform
import Testing

/// Every helper tool qlab runs has a deadline (issue 19): one that hangs
/// (here a stand-in for QEMU that never answers `-device vfio-pci,help`) is
/// killed, its whole process group with it, and the run fails saying so.
@Suite("Helper tools have a deadline")
struct ToolDeadlineTests {
    /// A stand-in for QEMU that never answers; the child it starts would keep
    /// the output pipe open if only the tool were killed.
    static func hangingTool(in dir: LabTempDirectory) throws -> String {
        let hanging = try dir.write("qemu-hangs", "#!/bin/sh\nsleep 300 &\nexec sleep 300\n")
        #expect(chmod(hanging, 0o755) == 0)
        return hanging
    }

    /// The blocking form (the planner's rombar probe).
    @Test func aHangingToolIsKilledAtItsDeadline() throws {
        let dir = try LabTempDirectory("tool")
        defer { dir.remove() }
        let hanging = try Self.hangingTool(in: dir)
        let blocking = ToolRunner.run([hanging, "-device", "vfio-pci,help"], timeout: .milliseconds(500))
        guard case .failure(let error) = blocking else {
            Issue.record("a hanging tool ran to completion: \(blocking)")
            return
        }
        #expect(error.message.contains("did not finish within"), "\(error.message)")
    }

    /// The async form (qemu-img for overlays and variable stores).
    @Test func aHangingToolIsKilledAtItsDeadlineWhenAwaited() async throws {
        let dir = try LabTempDirectory("tool")
        defer { dir.remove() }
        let hanging = try Self.hangingTool(in: dir)
        let asynchronous = await ToolRunner.run([hanging], timeout: .milliseconds(500))
        guard case .failure(let asyncError) = asynchronous else {
            Issue.record("a hanging tool ran to completion: \(asynchronous)")
            return
        }
        #expect(asyncError.message.contains("did not finish within"), "\(asyncError.message)")
    }
}
