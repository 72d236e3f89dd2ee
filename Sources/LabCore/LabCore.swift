@_exported import LabSupervision

/// LabCore: labs, QEMU command lines, processes, snapshots, hotplug,
/// diagnosis, host checks and test runs. The `qlab` command is a thin
/// front end over this library.
public enum LabCore {
    public static let version = "0.1.0"
}
