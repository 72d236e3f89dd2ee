import LabCore
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
}
