import QMP

/// One internal snapshot of a lab's VM, as QEMU lists it for a qcow2 node
/// (`query-named-block-nodes` → `image.snapshots`).
public struct SnapshotInfo: Sendable, Hashable {
    public var tag: String
    /// QEMU's snapshot id on the VM-state node.
    public var id: String
    /// Bytes of VM state (RAM and devices) stored with it.
    public var vmStateSize: Int
    /// When it was taken, seconds since the epoch.
    public var date: Double
    /// The guest's clock when it was taken.
    public var vmClock: Duration
    /// The snapshot nodes that hold it.
    public var nodes: [String]
    /// False when some snapshot node lacks it: QEMU cannot load it then.
    public var complete: Bool

    public init(tag: String, id: String, vmStateSize: Int, date: Double, vmClock: Duration, nodes: [String], complete: Bool) {
        self.tag = tag
        self.id = id
        self.vmStateSize = vmStateSize
        self.date = date
        self.vmClock = vmClock
        self.nodes = nodes
        self.complete = complete
    }

    /// From one entry of `image.snapshots` (SnapshotInfo in QEMU's schema).
    init?(_ json: JSONValue, node: String) {
        guard let tag = json["name"]?.stringValue else { return nil }
        self.tag = tag
        self.id = json["id"]?.stringValue ?? ""
        self.vmStateSize = json["vm-state-size"]?.intValue ?? 0
        self.date = Double(json["date-sec"]?.intValue ?? 0) + Double(json["date-nsec"]?.intValue ?? 0) / 1e9
        self.vmClock = .seconds(json["vm-clock-sec"]?.intValue ?? 0) + .nanoseconds(json["vm-clock-nsec"]?.intValue ?? 0)
        self.nodes = [node]
        self.complete = true
    }

    /// `1.2 MiB`.
    public var sizeDescription: String {
        let mib = Double(vmStateSize) / 1_048_576
        if mib >= 1 { return String((mib * 10).rounded() / 10) + " MiB" }
        return String(Int((Double(vmStateSize) / 1024).rounded())) + " KiB"
    }

    /// `2026-11-25 14:47:29` (UTC).
    public var dateDescription: String {
        formatTimestamp(date).replacingFirst("T", with: " ").replacingFirst("Z", with: "")
    }

    /// `00:01:26.186`, as `info snapshots` prints it.
    public var vmClockDescription: String {
        let (seconds, attoseconds) = vmClock.components
        let ms = Int(attoseconds / 1_000_000_000_000_000)
        func pad(_ value: Int64, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(seconds / 3600, 2)):\(pad(seconds / 60 % 60, 2)):\(pad(seconds % 60, 2)).\(pad(Int64(ms), 3))"
    }

    public var json: JSONValue {
        [
            "tag": .string(tag), "id": .string(id), "vm_state_size": JSONValue(vmStateSize), "created_at": .timestamp(date),
            "created_at_seconds": .seconds(date), "vm_clock_ns": JSONValue(Int(vmClock.components.seconds) * 1_000_000_000 + Int(vmClock.components.attoseconds / 1_000_000_000)),
            "vm_clock": .string(vmClockDescription), "nodes": .array(nodes.map(JSONValue.string)), "complete": .bool(complete),
        ]
    }
}

extension String {
    func replacingFirst(_ target: Character, with replacement: String) -> String {
        guard let index = firstIndex(of: target) else { return self }
        var copy = self
        copy.replaceSubrange(index...index, with: replacement)
        return copy
    }
}
