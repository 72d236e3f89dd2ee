import Platform
import QMP

/// Remembers which driver each device had before `qlab vfio bind`, so that
/// `qlab vfio unbind` can restore it. A JSON file, written atomically
/// (temporary file, `fsync(2)`, `rename(2)`):
///
///     {"version": 1, "bindings": [{"address": "0000:03:04.0", "sysfs": "/sys",
///       "group": 12, "previousDriver": "aic7xxx", "previousOverride": null}]}
public struct VFIOBindingStore {
    public struct Binding: Sendable, Hashable {
        public var address: PCIAddress
        /// The sysfs root it was made under, so test trees and the live host never mix.
        public var sysfs: String
        public var group: Int?
        public var previousDriver: String?
        public var previousOverride: String?

        public init(address: PCIAddress, sysfs: String, group: Int?, previousDriver: String?, previousOverride: String?) {
            self.address = address
            self.sysfs = sysfs
            self.group = group
            self.previousDriver = previousDriver
            self.previousOverride = previousOverride
        }
    }

    public struct StoreError: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    public var path: String

    public init(path: String) { self.path = path }

    /// `$QLAB_STATE_DIR/vfio-bindings.json`, else `$XDG_STATE_HOME/qlab/...`, else `~/.local/state/qlab/...`.
    public static func defaultPath(environment: [String: String]) -> String {
        if let dir = environment["QLAB_STATE_DIR"], !dir.isEmpty { return dir + "/vfio-bindings.json" }
        if let dir = environment["XDG_STATE_HOME"], !dir.isEmpty { return dir + "/qlab/vfio-bindings.json" }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? "/root"
        return home + "/.local/state/qlab/vfio-bindings.json"
    }

    /// The stored bindings; empty when the file does not exist. Read only from
    /// a directory of the user's alone (``PrivateDirectory``): `unbind` writes
    /// what it says to sysfs, so nobody else may have written it.
    public func load() throws -> [Binding] {
        let name = Paths.baseName(path)
        guard let directory = try PrivateDirectory.open(Paths.directory(of: path), role: .state, create: false),
            directory.contains(name)
        else { return [] }
        guard let bytes = directory.read(name) else { throw StoreError(description: "\(path): cannot read the vfio binding state (not a regular file of yours?)") }
        let root: JSONValue
        do { root = try JSONValue.parse(bytes) } catch {
            throw StoreError(description: "\(path): line \(error.line), column \(error.column): \(error.text); fix or remove the file (it only records drivers to restore)")
        }
        guard let list = root["bindings"]?.arrayValue else {
            throw StoreError(description: "\(path): no \"bindings\" array; fix or remove the file")
        }
        return try list.enumerated().map { index, item in
            guard let text = item["address"]?.stringValue, let address = PCIAddress(text),
                let sysfs = item["sysfs"]?.stringValue
            else {
                throw StoreError(description: "\(path): bindings[\(index)] needs \"address\" (a BDF) and \"sysfs\"; fix or remove the file")
            }
            return Binding(address: address, sysfs: sysfs, group: item["group"]?.intValue,
                previousDriver: item["previousDriver"]?.stringValue, previousOverride: item["previousOverride"]?.stringValue)
        }
    }

    public func save(_ bindings: [Binding]) throws {
        let list: [JSONValue] = bindings.map { binding in
            [
                "address": .string(binding.address.description),
                "sysfs": .string(binding.sysfs),
                "group": binding.group.map { JSONValue($0) } ?? .null,
                "previousDriver": binding.previousDriver.map(JSONValue.string) ?? .null,
                "previousOverride": binding.previousOverride.map(JSONValue.string) ?? .null,
            ]
        }
        let document: JSONValue = ["version": 1, "bindings": .array(list)]
        var bytes = try document.serialized(pretty: true)
        bytes.append(UInt8(ascii: "\n"))
        try Self.writeAtomically(bytes, to: path)
    }

    /// Writes atomically in a directory of the user's alone, made (0700) when
    /// missing: ``PrivateDirectory/writeAtomically(_:_:mode:)`` (an
    /// unpredictable `O_EXCL` temporary name, `fsync(2)`, `renameat(2)`).
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        guard let directory = try PrivateDirectory.open(Paths.directory(of: path), role: .state, create: true) else { return }
        do { try directory.writeAtomically(Paths.baseName(path), bytes) } catch {
            throw StoreError(description: "cannot write the vfio binding state: \(error)")
        }
    }
}

extension VFIOBindingStore {
    /// The store at ``defaultPath(environment:)`` for this process's environment (`getenv(3)`).
    public static func forCurrentUser() -> VFIOBindingStore {
        var environment: [String: String] = [:]
        for key in ["QLAB_STATE_DIR", "XDG_STATE_HOME", "HOME"] {
            if let value = ThisProcess.environment(key) { environment[key] = value }
        }
        return VFIOBindingStore(path: defaultPath(environment: environment))
    }
}
