import Platform
import QMP

/// `qlab cards`: the host cards qlab knows of here, each with what a CI
/// runner's tags and a person deciding where to run need: what it is, whether
/// vfio can have it (the doctor's group, masking and line checks), who holds
/// it now, its health, and the labs that use it.
///
/// Which cards: those the running labs pass through (their records), those the
/// lab files given (or found in the labs directory) name, those reserved or
/// health-checked here before (their lock and health files), and those named
/// with `--device`.
public struct CardInventory {
    public struct Card: Sendable {
        public var address: PCIAddress
        /// nil when the address is not in sysfs (a card named by a lab but not in this host).
        public var device: PCIDevice?
        public var name: String?
        public var checks: [DoctorCheck]
        /// nil: free; `.some(nil)`: held, holder not recorded.
        public var holder: CardHolder??
        public var health: CardHealth?
        public var labs: [String]

        /// The runner tag for the card: `card:9004-5078` (vendor-device, as GitLab tags allow).
        public var tag: String? { device.map { "card:" + PCIDeviceIDs.hex4($0.vendorID) + "-" + PCIDeviceIDs.hex4($0.deviceID) } }

        public func check(_ id: String) -> DoctorCheck? { checks.first { $0.id == id } }

        /// "free", "held", "bad": one word for the table.
        public var state: String {
            if health?.status == .bad { return "bad" }
            return holder == nil ? "free" : "held"
        }

        public var json: JSONValue {
            func checkJSON(_ id: String) -> JSONValue {
                guard let check = check(id) else { return .null }
                return ["status": .string(check.status.rawValue), "detail": .string(check.detail)]
            }
            let holderJSON: JSONValue
            switch holder {
            case .none: holderJSON = .null
            case .some(.none): holderJSON = ["lab": .null]
            case .some(.some(let holder)): holderJSON = holder.json
            }
            var object = JSONObject()
            object["address"] = .string(address.description)
            object["present"] = .bool(device != nil)
            object["ids"] = device.map { .string($0.ids) } ?? .null
            object["name"] = name.map(JSONValue.string) ?? .null
            object["tag"] = tag.map(JSONValue.string) ?? .null
            object["driver"] = device?.driver.map(JSONValue.string) ?? .null
            object["iommu_group"] = device?.iommuGroup.map { JSONValue($0) } ?? .null
            object["group_viable"] = checkJSON("group-viable")
            object["intx_masking"] = checkJSON("intx-masking")
            object["intx_shared"] = checkJSON("intx-shared")
            object["holder"] = holderJSON
            let unknown: JSONValue = ["status": "unknown", "reason": "never checked here", "checked_at": .null]
            object["health"] = health?.json ?? unknown
            object["labs"] = .array(labs.map(JSONValue.string))
            return .object(object)
        }
    }

    public var roots: HostRoots
    public var environment: [String: String]

    public init(roots: HostRoots, environment: [String: String]) {
        self.roots = roots
        self.environment = environment
    }

    /// The cards, by address. `labs`: lab files read for the cards they name.
    public func cards(labs: [Lab], devices: [DeviceSelector]) throws -> [Card] {
        let sysfs = Sysfs(roots: roots)
        var labsOf: [PCIAddress: Set<String>] = [:]
        func add(_ address: PCIAddress, lab: String?) {
            var names = labsOf[address] ?? []
            if let lab { names.insert(lab) }
            labsOf[address] = names
        }
        // Running labs: what their launch resolved and recorded.
        for runtime in try LabRuntime.all(environment: environment) {
            guard let record = (try? runtime.records.reload()) ?? nil, runtime.liveQEMU(record) != nil else { continue }
            for planned in record.passthroughHosts { if let address = PCIAddress(planned.host) { add(address, lab: record.name) } }
        }
        let planner = LabPlanner(
            runtimeRoot: LabDirectories.runtimeRoot(environment: environment, uid: ThisProcess.userID),
            stateRoot: LabDirectories.stateRoot(environment: environment), hostRoots: roots, environment: environment)
        for lab in labs {
            for address in planner.reservedCards(of: lab) { add(address, lab: lab.name) }
        }
        for selector in devices {
            for device in selector.resolve(in: sysfs) { add(device.address, lab: nil) }
            if case .address(let address) = selector { add(address, lab: nil) }
        }
        let lockDirectory = try CardLockDirectory.open(environment: environment, create: false)
        for name in lockDirectory?.names() ?? [] where name.hasPrefix("pci-") && name.hasSuffix(".lock") {
            if let address = PCIAddress(String(name.dropFirst(4).dropLast(5))) { add(address, lab: nil) }
        }
        let health = CardHealthStore(environment: environment)
        for record in health.all() { if let address = PCIAddress(record.address) { add(address, lab: nil) } }

        let doctor = HostDoctor(roots: roots, probePolicy: .never)
        let context = HostDoctor.Context(doctor: doctor)
        return labsOf.keys.sorted().map { address in
            let device = context.device(address)
            return Card(
                address: address, device: device,
                name: device.flatMap { KnownPCIDevices.lookup(vendor: $0.vendorID, device: $0.deviceID)?.name },
                checks: device.map { doctor.deviceChecks($0, context) } ?? [],
                holder: lockDirectory.flatMap { CardLock.holder(of: address.description, in: $0) },
                health: health.read(address.description), labs: (labsOf[address] ?? []).sorted())
        }
    }

    /// The table `qlab cards` prints.
    public static func table(_ cards: [Card]) -> String {
        let header = ["ADDRESS", "IDS", "NAME", "DRIVER", "GROUP", "VIABLE", "INTX-MASK", "LINE", "STATE", "HEALTH", "LABS"]
        var details: [String] = []
        let rows = cards.map { card -> [String] in
            if case .some(let holder) = card.holder {
                details.append("\(card.address) held by " + (holder?.description ?? "another qlab command (no holder recorded yet)"))
            }
            if let health = card.health { details.append("\(card.address) \(health.description)") }
            return [
                card.address.description, card.device?.ids ?? "-", card.name ?? (card.device == nil ? "(not in this host)" : "-"),
                card.device?.driver ?? "-", card.device?.iommuGroup.map(String.init) ?? "-",
                card.check("group-viable")?.status.rawValue ?? "-",
                card.check("intx-masking").map { $0.status == .pass ? "yes" : $0.status == .skip ? "-" : "no/unknown" } ?? "-",
                card.check("intx-shared").map { $0.status == .pass ? "own" : $0.status == .skip ? "-" : "shared" } ?? "-",
                card.state, card.health.map { $0.status.rawValue + " " + formatTimestamp($0.checkedAt) } ?? "unknown",
                card.labs.isEmpty ? "-" : card.labs.joined(separator: ","),
            ]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        let lines = ([header] + rows).map { line in
            line.enumerated().map { index, cell in index == line.count - 1 ? cell : cell.hostPadded(widths[index]) }.joined(separator: "  ")
        }
        return (lines + details).joined(separator: "\n") + "\n"
    }
}
