import Foundation
import LabCore
import Testing

/// Whoever has a lab, or a host card of it, while a test's other commands try it: a lab a
/// `qlab up` started (its supervisor holds it) or a `qlab run` in the background. A command
/// it refuses exits 4 (busy, the one table's row) naming the holder's command, pid and since when.
struct LabHolder {
    /// How the holder was started, as a refusal names it: "qlab run x.yaml", "qlab up --force x.yaml (its supervisor)".
    let command: String
    let pid: Int32

    /// `qlab up ARGUMENTS` of lab `name`: up (or the test fails here), held by its supervisor.
    static func up(_ env: QLabTestEnvironment, _ arguments: [String], name: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws -> LabHolder {
        let up = try env.qlab(["up"] + arguments)
        try #require(up.status == 0, "\(up.output)", sourceLocation: sourceLocation)
        let record = try #require(try env.runtime(name).record, sourceLocation: sourceLocation)
        return LabHolder(command: "qlab up " + arguments.joined(separator: " "), pid: record.supervisorPID)
    }

    /// `result` was refused because of this holder: exit 4 (busy), `what` is said, and the
    /// holder's command, pid and "since" are named.
    func expectRefused(_ result: QLabTestEnvironment.Result, saying what: String = "", _ context: String = "", sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        #expect(result.status == ExitStatus.busy.rawValue, "\(context): \(result.output)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains(what), "\(context): \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains(command), "\(context): the holder's command \(command): \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains("pid \(pid), since "), "\(context): the holder's pid \(pid) and since when: \(result.stderr)", sourceLocation: sourceLocation)
    }
}

extension QLabTestEnvironment {
    /// An environment for a test that boots the test guest: its images are required first.
    static func withGuestImages(prefix: String = "qlt") throws -> QLabTestEnvironment {
        try RunLoopTests.requireImages()
        return try QLabTestEnvironment(prefix: prefix)
    }
}
