@testable import LabCore
import Platform
import QMP
import Testing

/// The probe's verdict from what a QEMU printed (the real QEMUs here abort:
/// QEMUCrashTests runs them), and the capability's record form.
@Suite("Second dc390 plug: verdicts and records")
struct SecondDC390PlugTests {
    static let replies = """
        {"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "x"}, "capabilities": ["oob"]}}\r
        {"return": {}}\r
        {"return": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian 1:10.0.2"}}\r
        {"return": {}}\r
        {"return": {}}\r
        {"return": {}}\r
        {"timestamp": {"seconds": 1, "microseconds": 2}, "event": "DEVICE_DELETED", "data": {"device": "qlab-probe"}}\r
        {"return": {"status": "prelaunch", "running": false}}\r
        """

    @Test func aQEMUThatSurvivesTheSecondPlugWorks() {
        let run = CapturedRun(exit: .exited(0), output: Self.replies + "\n{\"return\": {}}\r\n{\"return\": {}}\r\n", timedOut: false)
        #expect(SecondDC390Plug.interpret(run) == .works(version: "10.0.2 (Debian 1:10.0.2)"))
    }

    @Test func anAbortIsAnAbortAndAnythingElseIsUnknown() {
        let abort = CapturedRun(
            exit: .signaled(6),
            output: Self.replies + "\nqemu-system-x86_64: migration/savevm.c:947: vmstate_register_with_alias_id: Assertion `!se->compat || se->instance_id == 0' failed.\n",
            timedOut: false)
        #expect(SecondDC390Plug.interpret(abort) == .aborts(version: "10.0.2 (Debian 1:10.0.2)"))
        let noDriver = CapturedRun(
            exit: .exited(0),
            output: "{\"return\": {}}\r\n{\"error\": {\"class\": \"GenericError\", \"desc\": \"'dc390' is not a valid device model name\"}}\r\n",
            timedOut: false)
        #expect(SecondDC390Plug.interpret(noDriver) == .unknown(reason: "'dc390' is not a valid device model name"))
        #expect(!SecondDC390Plug.interpret(noDriver).aborts)
    }

    /// Kept in the capability cache and the lab record; records without it read as not asked.
    @Test func theAnswerRoundTripsAndOldRecordsReadAsNotAsked() throws {
        for answer: SecondDC390Plug in [.notAsked, .works(version: "9.2.0"), .aborts(version: "7.2.22"), .unknown(reason: "no dc390")] {
            let capabilities = QEMUCapabilities(rombar: .onOff, secondDC390Plug: answer)
            let json = try JSONValueEncoder().encode(capabilities)
            #expect(try JSONValueDecoder().decode(QEMUCapabilities.self, from: json) == capabilities)
        }
        let old = try JSONValueDecoder().decode(QEMUCapabilities.self, from: ["rombar": "on_off"])
        #expect(old == QEMUCapabilities(rombar: .onOff, secondDC390Plug: .notAsked))
        #expect(throws: (any Error).self) {
            _ = try JSONValueDecoder().decode(QEMUCapabilities.self, from: ["second_dc390_plug": ["result": "maybe"]])
        }
    }
}
