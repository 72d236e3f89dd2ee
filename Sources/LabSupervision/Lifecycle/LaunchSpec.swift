import Platform
import QMP

/// What `up` hands the supervisor (`launch.json`): the QEMU command line and
/// the record to keep. Codable through ``JSONValueEncoder``/``JSONValueDecoder``:
/// `{"argv": [...], "record": {lab.json}, "runtime_root": ..., "state_root": ...}`.
public struct LaunchSpec: Sendable, Codable {
    public var argv: [String]
    public var record: LabRecord
    public var runtimeRoot: String
    public var stateRoot: String

    public init(argv: [String], record: LabRecord, runtimeRoot: String, stateRoot: String) {
        self.argv = argv
        self.record = record
        self.runtimeRoot = runtimeRoot
        self.stateRoot = stateRoot
    }

    public var runtime: LabRuntime { LabRuntime(name: record.name, runtimeRoot: runtimeRoot, stateRoot: stateRoot) }

    enum CodingKeys: String, CodingKey {
        case argv, record
        case runtimeRoot = "runtime_root"
        case stateRoot = "state_root"
    }

    /// Every field is required, and `argv` names a program: the supervisor runs it.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        argv = try c.decode([String].self, forKey: .argv)
        guard !argv.isEmpty else {
            throw DecodingError.dataCorruptedError(forKey: .argv, in: c, debugDescription: "empty: a launch spec names the QEMU to run")
        }
        record = try c.decode(LabRecord.self, forKey: .record)
        runtimeRoot = try c.decode(String.self, forKey: .runtimeRoot)
        stateRoot = try c.decode(String.self, forKey: .stateRoot)
    }

    /// Reads a launch spec from a runtime dir that passes the checks of
    /// ``PrivateDirectory`` (the supervisor runs what it says). A spec that
    /// does not decode is a ``RecordFileError`` naming the file and field.
    public static func read(path: String) throws -> LaunchSpec {
        guard let directory = try PrivateDirectory.open(Paths.directory(of: path), role: .runtime, create: false),
            let bytes = directory.read(Paths.baseName(path))
        else { throw LabError.supervisor("cannot read launch spec \(path)") }
        return try RecordFileError.decode(LaunchSpec.self, from: bytes, path: path)
    }
}
