import ArgumentParser
import LabCore
import Platform
import QMP

/// Where the host's kernel files are read from; shared by doctor, devices and vfio.
struct HostRootOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Read sysfs from DIR (a tree laid out as the kernel does).", valueName: "DIR"))
    var sysfs: String = "/sys"
    @Option(help: ArgumentHelp("Read procfs from DIR.", valueName: "DIR"))
    var procfs: String = "/proc"
    @Option(help: ArgumentHelp("Read device nodes from DIR.", valueName: "DIR"))
    var devfs: String = "/dev"

    func validate() throws {
        for (flag, dir) in [("--sysfs", sysfs), ("--procfs", procfs), ("--devfs", devfs)] where !FileSystem.isDirectory(dir) {
            throw ValidationError("\(flag) \(dir): not a directory")
        }
    }

    var roots: HostRoots { HostRoots(sysfs: sysfs, procfs: procfs, devfs: devfs) }
}

struct DoctorCommand: ParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check the host for vfio passthrough before QEMU starts.",
        discussion: """
            Reads the kernel's own files (sysfs, procfs, /dev) and reports host checks and per-device \
            checks, each pass, warn, fail or skip with what was read and what to do. Exits 1 when a \
            check fails. See docs/doctor.md.
            """)

    @Argument(help: "A lab file: check its passthrough devices against its guest memory.")
    var lab: String?

    @Option(name: .customLong("device"), help: ArgumentHelp("A device to check: a PCI address (0000:03:04.0) or ids (9004:5078). Repeatable.", valueName: "BDF"))
    var devices: [String] = []

    @Flag(help: "Print JSON: {\"ok\", \"host\": [checks], \"devices\": [{\"address\", \"checks\"}]}.")
    var json = false

    @Option(help: ArgumentHelp("Guest memory to check memlock against (512M, 2G; MiB without a suffix). Overrides the lab's.", valueName: "SIZE"))
    var memory: String?

    @Flag(name: .customLong("setup-plan"), help: "Print the persistent host setup (kernel command line, modprobe.d, modules-load.d) instead of checking.")
    var setupPlan = false

    @Flag(name: .customLong("problems"), help: "Show only warnings and failures.")
    var onlyProblems = false

    @OptionGroup var host: HostRootOptions

    func validate() throws {
        for text in devices where DeviceSelector(text) == nil {
            throw ValidationError("--device \(text): expected a PCI address such as 0000:03:04.0 or ids such as 9004:5078")
        }
        if let memory, ByteSize(parsing: memory) == nil {
            throw ValidationError("--memory \(memory): expected a size such as 512M, 1.5G or 2G (MiB without a suffix)")
        }
    }

    func run() throws {
        let roots = host.roots
        let selectors = devices.compactMap(DeviceSelector.init)
        let guestMemory = memory.flatMap { ByteSize(parsing: $0)?.bytes }
        let doctor = HostDoctor(roots: roots)
        let loaded = try lab.map { try Lab.load(path: $0) }

        if setupPlan {
            let sysfs = Sysfs(roots: roots)
            let all = (loaded.map { doctor.selectors(for: $0) } ?? []) + selectors
            let plan = SetupPlan(roots: roots, devices: all.flatMap { $0.resolve(in: sysfs) })
            if json { try printJSON(plan.json) } else { print(plan.text, terminator: "") }
            return
        }

        let report = loaded.map { doctor.run(lab: $0, extraDevices: selectors, guestMemory: guestMemory) }
            ?? doctor.run(devices: selectors, guestMemory: guestMemory)
        if json {
            try printJSON(report.json)
        } else {
            print(report.text(onlyProblems: onlyProblems), terminator: "")
        }
        if !report.ok { throw Reported(.failed) }
    }
}
