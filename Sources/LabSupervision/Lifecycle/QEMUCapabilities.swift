
/// What qlab asked the QEMU binary it runs, where the answer changes the
/// command line: asked of the binary itself, not inferred from its version.
public struct QEMUCapabilities: Sendable, Hashable, Codable {
    /// How this QEMU spells vfio-pci's `rombar`.
    public var rombar: RombarSpelling

    public init(rombar: RombarSpelling = .number) {
        self.rombar = rombar
    }
}
