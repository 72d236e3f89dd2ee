/// Checks made before a run boots anything.
extension TestRunner {
    /// Refuses a matrix whose loop this QEMU cannot run (``LabPlanner/checkLoop(lab:guest:)``):
    /// a ``LabFileError``, exit 2, before any guest boots.
    public func checkLoops() throws {
        for (guestName, _) in try matrix().byGuest {
            try controller.planner.checkLoop(lab: lab, guest: try lab.selectGuest(guestName))
        }
    }
}
