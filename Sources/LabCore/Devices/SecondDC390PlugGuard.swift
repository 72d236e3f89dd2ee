import QMP

/// A `dc390` plugged again into the QEMU process it was unplugged from, on a
/// QEMU that aborts then (``SecondDC390Plug``), refused before `device_add`.
public struct SecondDC390PlugRefused: Error, Sendable, CustomStringConvertible {
    /// What was refused.
    public enum Operation: Sendable {
        /// A hotplug, or the re-plug of an in-place snapshot load.
        case plug
        /// A snapshot save (it would carry the EEPROM's state, and re-plugs attached cards).
        case save
    }

    public var device: String
    public var version: String
    public var qemuPID: Int32
    public var operation: Operation = .plug

    public var description: String {
        let why = "QEMU \(version) keeps a dc390's EEPROM registered for migration after the unplug"
        let alternatives = "Restart the lab (`qlab down`, `qlab up`) first, or use revert: fast (a fresh QEMU per revert), attach: boot, or driver am53c974"
        switch operation {
        case .plug:
            return "\(device) (dc390) was already hotplugged into this QEMU (pid \(qemuPID)), and plugging it again (a hotplug after an unplug, or the re-plug of an in-place snapshot load) would abort QEMU: "
                + "\(why), and a second registration fails \"Assertion `!se->compat || se->instance_id == 0' failed\". \(alternatives)"
        case .save:
            return "\(device) (dc390) was hotplugged into this QEMU (pid \(qemuPID)), so a snapshot saved now cannot be loaded by any other QEMU (a fast revert, or after `qlab down`/`up`: \"Unknown savevm section ... /eeprom\"), "
                + "and saving re-plugs an attached card, which aborts QEMU: \(why). \(alternatives), and save before plugging it"
        }
    }
}

/// Which `dc390`s were hotplugged into which QEMU process: `RUNTIME/LAB/dc390-plugs.json`,
/// `{"qemu_pid", "qemu_start_time", "devices"}`. A QEMU replaced by a fast revert, or a new
/// `up`, has another pid or start time, so its list starts empty.
extension LabSession {
    static let dc390PlugsFile = "dc390-plugs.json"

    /// Throws ``SecondDC390PlugRefused`` for the first of `names` that is a
    /// `dc390` already plugged into this QEMU, when the lab's QEMU aborts on that.
    func refuseSecondDC390Plug(_ names: [String]) throws {
        let record = currentRecord
        guard case .aborts(let version) = record.capabilities.secondDC390Plug else { return }
        let plugged = dc390sPluggedIntoThisQEMU(record)
        for name in names where plugged.contains(name) {
            throw SecondDC390PlugRefused(device: name, version: version, qemuPID: record.qemuPID)
        }
    }

    /// Throws ``SecondDC390PlugRefused`` (`.save`) when a `dc390` was plugged
    /// into this QEMU, on a QEMU that aborts on a second plug: the snapshot
    /// would hold the EEPROM's stale section, and the save re-plugs it.
    func refuseSnapshotSaveAfterDC390Plug() throws {
        let record = currentRecord
        guard case .aborts(let version) = record.capabilities.secondDC390Plug,
            let device = dc390sPluggedIntoThisQEMU(record).sorted().first
        else { return }
        throw SecondDC390PlugRefused(device: device, version: version, qemuPID: record.qemuPID, operation: .save)
    }

    /// Notes that `name` was hotplugged into this QEMU, when it is a `dc390`
    /// and the lab's QEMU aborts on a second plug.
    func noteDC390Plugged(_ name: String) {
        let record = currentRecord
        guard record.capabilities.secondDC390Plug.aborts, (try? labDevice(name))?.emulated?.driver == "dc390",
            let directory = try? runtime.runtimeDirectory(create: false)
        else { return }
        let devices = dc390sPluggedIntoThisQEMU(record).union([name]).sorted()
        let value: JSONValue = [
            "qemu_pid": JSONValue(record.qemuPID), "qemu_start_time": record.qemuStartTime.map { JSONValue($0) } ?? .null,
            "devices": .array(devices.map { .string($0) }),
        ]
        try? directory.writeJSON(Self.dc390PlugsFile, value, durable: false)
    }

    func dc390sPluggedIntoThisQEMU(_ record: LabRecord) -> Set<String> {
        guard let directory = try? runtime.runtimeDirectory(create: false), let value = directory.readJSON(Self.dc390PlugsFile),
            value["qemu_pid"]?.intValue == Int(record.qemuPID), value["qemu_start_time"]?.uint64Value == record.qemuStartTime
        else { return [] }
        return Set(value["devices"]?.arrayValue?.compactMap(\.stringValue) ?? [])
    }
}
