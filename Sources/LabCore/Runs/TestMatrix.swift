/// One cell of a run: a test on a guest (with one device, in a lab with a
/// device dimension), the n-th time.
public struct TestRunEntry: Sendable, Hashable {
    public var guest: String
    /// The one device of the lab's `matrix: {devices: ...}` this run has (nil: no device dimension).
    public var device: String?
    public var test: String
    /// 1-based.
    public var repeatIndex: Int
    /// Position in the whole (unsharded) matrix, 0-based: stable across shards.
    public var matrixIndex: Int

    public init(guest: String, device: String? = nil, test: String, repeatIndex: Int, matrixIndex: Int) {
        self.guest = guest
        self.device = device
        self.test = test
        self.repeatIndex = repeatIndex
        self.matrixIndex = matrixIndex
    }

    public var displayName: String { repeatIndex > 1 ? "\(test)#\(repeatIndex)" : test }

    /// The test name of the entry that records a failed boot.
    public static let bootTestName = "boot"

    /// The entry for a failed boot of `guest`, met while starting `entry`:
    /// repeat 0 (no test's run has it), at `entry`'s matrix position.
    public static func boot(of guest: String, before entry: TestRunEntry) -> TestRunEntry {
        TestRunEntry(guest: guest, device: entry.device, test: bootTestName, repeatIndex: 0, matrixIndex: entry.matrixIndex)
    }

    /// True for a boot entry (``boot(of:before:)``).
    public var isBoot: Bool { test == Self.bootTestName && repeatIndex == 0 }
}

/// `--shard K/N`: the K-th of N disjoint parts of the matrix.
public struct Shard: Sendable, Hashable, CustomStringConvertible {
    public var index: Int
    public var count: Int

    /// The most shards a run may be cut into.
    public static let maximumCount = 1000

    /// Parses `K/N` with 1 <= K <= N <= `maximumCount`.
    public init?(_ text: String) {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]), n >= 1, n <= Self.maximumCount, k >= 1, k <= n
        else { return nil }
        index = k
        count = n
    }

    public init(index: Int, count: Int) {
        self.index = index
        self.count = count
    }

    public var description: String { "\(index)/\(count)" }

    /// Cells are dealt round-robin in matrix order, so every cell lands in
    /// exactly one shard and shards differ in size by at most one.
    public func contains(_ entry: TestRunEntry) -> Bool { entry.matrixIndex % count == index - 1 }
}

/// The guest × test × repeat matrix of a lab, in a deterministic order:
/// guests in lab order, then tests in lab order, then repeats. A lab with a
/// device dimension (`matrix: {devices: ...}`) has guest × device × test ×
/// repeat, devices in lab order within each guest, so a guest that needs a
/// boot per device boots once per device.
public struct TestMatrix: Sendable {
    public var entries: [TestRunEntry]

    public enum SelectionError: Error, Sendable, CustomStringConvertible {
        case unknownGuest(String, known: [String])
        case unknownTest(String, known: [String])
        case unknownDevice(String, known: [String])
        case empty(String)

        public var description: String {
            switch self {
            case .unknownGuest(let name, let known): return "no guest '\(name)' in the lab; its guests: \(known.joined(separator: ", "))"
            case .unknownTest(let name, let known): return "no test '\(name)' in the lab; its tests: \(known.joined(separator: ", "))"
            case .unknownDevice(let name, let known):
                return known.isEmpty
                    ? "no device dimension in the lab (--device '\(name)'); add `matrix: {devices: each}` to run its tests once per device"
                    : "no device '\(name)' in the lab's matrix; its devices: \(known.joined(separator: ", "))"
            case .empty(let why): return "nothing to run: \(why)"
            }
        }
    }

    public init(lab: Lab, guests: [String] = [], tests: [String] = [], devices: [String] = [], repeats: Int = 1, shard: Shard? = nil) throws {
        for name in guests where lab.guest(named: name) == nil {
            throw SelectionError.unknownGuest(name, known: lab.guests.map(\.name))
        }
        for name in tests where lab.test(named: name) == nil {
            throw SelectionError.unknownTest(name, known: lab.tests.map(\.name))
        }
        for name in devices where !lab.matrixDevices.contains(name) {
            throw SelectionError.unknownDevice(name, known: lab.matrixDevices)
        }
        // Without a device dimension, one "device" (nil): every device at once.
        let cells: [String?] = lab.matrixDevices.isEmpty ? [nil] : lab.matrixDevices.filter { devices.isEmpty || devices.contains($0) }
        var all: [TestRunEntry] = []
        for guest in lab.guests where guests.isEmpty || guests.contains(guest.name) {
            for device in cells {
                for test in lab.tests where (tests.isEmpty || tests.contains(test.name)) && test.applies(to: guest.name) && test.applies(toDevice: device) {
                    for repeatIndex in 1...max(1, repeats) {
                        all.append(TestRunEntry(guest: guest.name, device: device, test: test.name, repeatIndex: repeatIndex, matrixIndex: all.count))
                    }
                }
            }
        }
        if all.isEmpty { throw SelectionError.empty(lab.tests.isEmpty ? "the lab has no tests:" : "no selected test applies to the selected guests") }
        entries = shard.map { s in all.filter { s.contains($0) } } ?? all
    }

    /// Entries grouped by guest, guests in matrix order.
    public var byGuest: [(guest: String, entries: [TestRunEntry])] {
        var order: [String] = []
        var groups: [String: [TestRunEntry]] = [:]
        for entry in entries {
            if groups[entry.guest] == nil { order.append(entry.guest) }
            groups[entry.guest, default: []].append(entry)
        }
        return order.map { ($0, groups[$0]!) }
    }
}

extension TestMatrix.SelectionError: ExitStatusCarrying {
    /// A guest or test the lab does not have, or an empty selection: bad input.
    public var exitStatus: ExitStatus { .usage }
}
