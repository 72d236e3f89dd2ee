import ArgumentParser
import LabCore
import QMP

/// Opens a session on a running lab while holding the lab's lock (one
/// changing command at a time), runs `body`, closes the session. Errors are
/// reported as `qlab NAME: ...` with the documented exit code. SIGINT,
/// SIGTERM and SIGHUP cancel `body` and exit 130/143/129.
func withLabSession(_ lab: String, command: String, _ body: @escaping @Sendable (LabSession) async throws -> Void) async throws {
    try await runCancellable(command) { _ in
        do {
            let runtime = try LabRuntime.locateExisting(lab)
            let lock = try await runtime.takeLockOfRunningLab()
            defer { withExtendedLifetime(lock) {} }
            // Under the lock: the record is made to agree with QEMU first (a
            // command killed half-way may have left it behind).
            let session = try await LabSession.open(runtime: runtime, reconcilingDevices: true)
            defer { session.close() }
            try await body(session)
        } catch let error as Reported {
            throw error
        } catch where Task.isCancelled {
            throw error
        } catch {
            throw Reported(command, error)
        }
    }
}

func stepLines(_ timings: StepTimings) -> [String] {
    timings.steps.map { "  \($0.name): \(formatMilliseconds($0.duration))" }
}

struct HotplugCommand: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "hotplug",
        abstract: "Attach a lab device to the running VM (device_add; disks get fresh overlays).",
        discussion: """
            An emulated controller gets a fresh qcow2 overlay over each disk's base image, \
            blockdev-add, device_add at its planned slot, and a scsi-hd per disk on its bus; \
            a passthrough device gets device_add vfio-pci. The guest then sees the card through \
            ACPI hotplug (Linux: possibly after a rescan).
            """)

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
    @Argument(help: "The lab's device name.", completion: Completions.device) var device: String
    @Flag(help: "Print what was attached as JSON (steps included).") var json = false
    @Flag(help: "Also print each step's time (QMP commands, event waits, host steps).") var steps = false

    func run() async throws {
        let (json, verbose) = (json, steps)
        try await withLabSession(lab, command: "hotplug") { session in
            let result = try await session.attach(device)
            if json { return try printJSON(result.json) }
            var line = "\(device) attached: \(result.driver) at \(result.placement)"
            if !result.overlays.isEmpty {
                line += ", disk\(result.overlays.count == 1 ? "" : "s") \(result.overlays.keys.sorted().joined(separator: ", ")) on fresh overlay\(result.overlays.count == 1 ? "" : "s")"
            }
            print(line + " (\(formatMilliseconds(result.timings.total)))")
            if verbose { stepLines(result.timings).forEach { print($0) } }
        }
    }
}

struct UnplugCommand: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "unplug",
        abstract: "Detach a lab device: device_del, wait for the guest, clean up its disks.",
        discussion: """
            PCI unplug needs the guest's OS to eject the card. qlab waits up to --timeout \
            seconds for DEVICE_DELETED; when the guest does not answer, refuses \
            (DEVICE_UNPLUG_GUEST_ERROR), or cannot (the VM is paused), a system_reset \
            completes the unplug, which resets the guest (--no-reset-fallback: fail instead). \
            The output says which happened.
            """)

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
    @Argument(help: "The lab's device name.", completion: Completions.device) var device: String
    @Option(help: "Seconds the guest gets to release the device.") var timeout: Double = 10
    @Flag(help: "Never reset the VM: fail when the guest does not release the device.") var noResetFallback = false
    @Flag(help: "Reset at once instead of asking the guest (its state is lost).") var reset = false
    @Flag(help: "Print how the device was detached as JSON (steps included).") var json = false
    @Flag(help: "Also print each step's time (QMP commands, event waits, host steps).") var steps = false

    func validate() throws {
        if reset && noResetFallback { throw ValidationError("--reset and --no-reset-fallback contradict each other") }
        _ = try checkedSeconds(timeout, option: "--timeout", allowZero: true)
    }

    func run() async throws {
        // 0 is meaningful here: do not wait for the guest at all.
        let guestTimeout = try checkedSeconds(timeout, option: "--timeout", allowZero: true)
        let policy = UnplugPolicy(
            guestTimeout: guestTimeout, resetFallback: !noResetFallback, resetAtOnce: reset)
        let (json, verbose) = (json, steps)
        try await withLabSession(lab, command: "unplug") { session in
            let result = try await session.detach(device, policy: policy)
            if json { return try printJSON(result.json) }
            var line = "\(device) detached after \(formatMilliseconds(result.unplugTime)): \(result.method)"
            if !result.removedOverlays.isEmpty { line += "; its disk overlays were deleted" }
            print(line)
            if verbose { stepLines(result.timings).forEach { print($0) } }
        }
    }
}

struct ResetCommand: AsyncParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "reset", abstract: "Reset the lab's VM (system_reset) and wait for the RESET event.")

    @Argument(help: "The lab name or file.", completion: Completions.lab) var lab: String
    @Flag(help: "Print the reset's result as JSON.") var json = false

    func run() async throws {
        let json = json
        try await withLabSession(lab, command: "reset") { session in
            let result = try await session.reset()
            if json { return try printJSON(result.json) }
            var line = "lab \(session.lab.name) reset (\(formatMilliseconds(result.timings.total)))"
            if !result.completedUnplugs.isEmpty {
                line += "; the reset completed the pending unplug of \(result.completedUnplugs.joined(separator: ", "))"
            }
            print(line)
        }
    }
}
