/// Asking QEMU how it spells `rombar`, and the spelling on a command line.
extension RombarSpelling {
    /// Reads the property's type from `QEMU -device vfio-pci,help` (about 40 ms);
    /// `.number` when QEMU cannot be asked.
    /// How long `QEMU -device vfio-pci,help` may take (about 40 ms when it works).
    static let probeTimeout: Duration = .seconds(10)

    public static func probe(qemu: String = Lab.defaultQEMU) -> RombarSpelling {
        // A deadline: a QEMU that hangs here (a wrapper waiting on something) must not hang planning.
        guard case .success(let outcome) = ToolRunner.run([qemu, "-device", "vfio-pci,help"], timeout: probeTimeout) else { return .number }
        return parse(help: outcome.output)
    }

    public func value(_ enabled: Bool) -> QEMUValue {
        switch self {
        case .number: return .int(enabled ? 1 : 0)
        case .onOff: return .string(enabled ? "on" : "off")
        }
    }
}
