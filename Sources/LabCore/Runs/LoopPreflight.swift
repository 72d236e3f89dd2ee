/// Checks made before a run boots anything.
extension TestRunner {
    /// Refuses a matrix that cannot be launched or whose loop this QEMU
    /// cannot run: a file the lab names that is missing (a disk image, a
    /// kernel: ``Lab/checkFiles(guest:)``) or a loop refused by
    /// ``LabPlanner/checkLoop(lab:guest:)``. A ``LabFileError``, exit 2, said
    /// once, before any guest boots (a boot would fail the same way for every entry).
    public func checkLoops() throws {
        for (guestName, _) in try matrix().byGuest {
            try lab.checkFiles(guest: guestName)
            try controller.planner.checkLoop(lab: lab, guest: try lab.selectGuest(guestName))
        }
    }
}
