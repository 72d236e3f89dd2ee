/// How the QEMU a fast revert starts maps the snapshot's RAM image
/// (docs/devices-snapshots.md, "Passthrough labs: fast or loadvm").
/// qlab's own reverts map it privately; the shared copies are there to be
/// measured against it (`qlab-bench revert --passthrough`): vfio pins all
/// guest RAM for writing when a card is plugged, which breaks copy-on-write
/// on every page of a private map, while a shared map is pinned in place.
public enum RAMImageMapping: String, Sendable, Hashable, CaseIterable {
    /// `mem-path=RAMDIR/snap-TAG.ram,share=off`: copy-on-write on the image itself.
    case privateMap = "private"
    /// A copy of the image's data extents made during the revert, before the
    /// old QEMU quits (`RAMDIR/mapped.ram`), mapped `share=on`.
    case copy
    /// The same on a copy made beforehand (`RAMDIR/premade-TAG.ram`, by
    /// `LabSession.premakeRAMCopy`): renamed to `mapped.ram` and mapped
    /// `share=on`, so the copy is off the revert's path.
    case premade
}

extension RAMFiles {
    /// The copy a shared-mapping revert's QEMU maps `share=on`.
    public static let mappedCopy = "mapped.ram"
    /// A copy of snapshot `tag`'s image made ahead of a revert (``RAMImageMapping/premade``).
    public static func premadeCopy(_ tag: String) -> String { "premade-\(tag).ram" }
}
