import QMP

/// One row of `qlab devices`: what a PCI function is and whether it can be passed through.
public struct DeviceSummary: Sendable, Hashable {
    public enum Verdict: String, Sendable, Hashable {
        /// Bound to vfio-pci and nothing fails.
        case ready
        /// Nothing fails except that it is not bound yet: `qlab vfio bind`.
        case bindable
        /// Something other than binding fails (group, IOMMU, IRQ line, ...).
        case blocked
        /// A bridge (PCI, host or ISA bridge): passed through only as part of its group, never itself.
        case bridge
    }

    public var address: PCIAddress
    public var ids: String
    public var name: String?
    public var className: String
    public var iommuGroup: Int?
    public var driver: String?
    public var irq: Int?
    public var intxMasking: INTxMasking.Verdict?
    public var verdict: Verdict
    /// The failing checks behind a `blocked` verdict.
    public var blockers: [String]

    /// Summarises every PCI device under the roots. Never probes or writes anything.
    public static func all(roots: HostRoots) -> [DeviceSummary] {
        let doctor = HostDoctor(roots: roots, probePolicy: .never)
        let context = HostDoctor.Context(doctor: doctor)
        return context.devices.map { device in
            let checks = doctor.deviceChecks(device, context)
            let masking = device.interruptPin == 0 ? nil : doctor.intxMasking(device, context).verdict
            let failing = checks.filter { $0.status == .fail }.map(\.id)
            let blockers = failing.filter { $0 != "driver-bound" && $0 != "vfio-nodes" }
            let isBridge = device.isBridge || device.baseClass == 0x06
            let verdict: Verdict =
                isBridge ? .bridge : !blockers.isEmpty ? .blocked : failing.isEmpty ? .ready : .bindable
            return DeviceSummary(
                address: device.address, ids: device.ids,
                name: KnownPCIDevices.lookup(vendor: device.vendorID, device: device.deviceID)?.name,
                className: KnownPCIDevices.className(device.classCode), iommuGroup: device.iommuGroup,
                driver: device.driver, irq: device.interruptPin == 0 ? nil : device.irq, intxMasking: masking,
                verdict: verdict, blockers: isBridge ? [] : blockers)
        }
    }

    public var json: JSONValue {
        [
            "address": .string(address.description), "ids": .string(ids), "name": name.map(JSONValue.string) ?? .null,
            "class": .string(className), "iommu_group": iommuGroup.map { JSONValue($0) } ?? .null,
            "driver": driver.map(JSONValue.string) ?? .null, "irq": irq.map { JSONValue($0) } ?? .null,
            "intx_masking": intxMasking.map { .string($0.rawValue) } ?? .null,
            "verdict": .string(verdict.rawValue), "blockers": .array(blockers.map(JSONValue.string)),
        ]
    }

    /// The table `qlab devices` prints.
    public static func table(_ rows: [DeviceSummary]) -> String {
        let header = ["ADDRESS", "IDS", "NAME", "CLASS", "GROUP", "DRIVER", "IRQ", "INTX-MASK", "VERDICT"]
        let cells = rows.map { row in
            [row.address.description, row.ids, row.name ?? "-", row.className, row.iommuGroup.map(String.init) ?? "-",
             row.driver ?? "-", row.irq.map(String.init) ?? "-", row.intxMasking?.rawValue ?? "-",
             row.verdict.rawValue + (row.blockers.isEmpty ? "" : " (" + row.blockers.joined(separator: ",") + ")")]
        }
        let widths = header.indices.map { column in ([header] + cells).map { $0[column].count }.max() ?? 0 }
        return ([header] + cells).map { line in
            line.enumerated().map { index, cell in index == line.count - 1 ? cell : cell.hostPadded(widths[index]) }
                .joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }
}
