import Foundation
import LabCore
import LabSupervision
import Platform
import QMP
import Testing

/// A record's strings are paths, names and argv that go to system calls as C
/// strings, where a NUL would cut them short: a record holding one is refused,
/// naming the file and the field.
@Suite("Records refuse NUL characters")
struct RecordNULTests {
    struct Record: Decodable { var qemu_output: String }

    @Test func aNULInARecordStringNamesTheField() throws {
        let text = #"{"exit_code": 0, "qemu_output": "a\u0000b", "diagnoses": []}"#
        #expect {
            _ = try RecordFileError.decode(Record.self, from: Array(text.utf8), path: "/x/last-exit.json")
        } throws: { error in
            guard let error = error as? RecordFileError else { return false }
            return error.field == "qemu_output" && error.path == "/x/last-exit.json" && error.problem.contains("NUL")
        }
        // The same record without the NUL reads.
        let clean = #"{"exit_code": 0, "qemu_output": "ab", "diagnoses": []}"#
        #expect(try RecordFileError.decode(Record.self, from: Array(clean.utf8), path: "/x/last-exit.json").qemu_output == "ab")
    }

    /// QEMU's stderr goes into the exit record: a NUL byte in it becomes U+FFFD, so the record reads back.
    @Test func aNULInQEMUsOutputDoesNotMakeTheExitRecordUnreadable() throws {
        let path = NSTemporaryDirectory() + "qlab-nul-log-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        defer { unlink(path) }
        FileManager.default.createFile(atPath: path, contents: Data("before\u{0}after\n".utf8))
        let output = Supervisor.readLog(path, from: 0)
        #expect(output == "before\u{FFFD}after")
        let record = ExitRecord(exit: .signaled(6), at: 0, requested: false, qemuOutput: output, diagnoses: [])
        let bytes = try record.json.serialized()
        #expect(try RecordFileError.decode(ExitRecord.self, from: bytes, path: path).qemuOutput == output)
    }
}
