import Platform

/// A lab: one QEMU machine, the devices qlab attaches to it, the guest
/// operating systems it can boot, and the tests to run in them.
///
/// Loaded from a YAML lab file with ``Lab/load(path:requireFiles:)``; every
/// path in it is absolute (resolved against the lab file's directory).
/// The format is documented in docs/lab-format.md.
public struct Lab: Sendable {
    /// `[a-z0-9][a-z0-9-]*`; names the runtime and state directories and QEMU's `-name`.
    public var name: String
    /// The lab file, absolute.
    public var file: String
    /// The directory relative paths in the file are resolved against.
    public var directory: String
    /// The QEMU system emulator to run (a path or a name looked up in PATH):
    /// the lab file's `qemu:`, else ``defaultQEMU``.
    public var qemu: String
    /// Lab-wide machine settings; a guest's own `machine:` and its OS profile fill in the rest.
    public var machine: MachineSettings
    /// Devices in file order.
    public var devices: [LabDevice]
    /// Guests in file order.
    public var guests: [LabGuest]
    /// Tests in file order.
    public var tests: [LabTest]
    /// How the test loop returns a guest to a clean state between runs.
    public var strategy: Strategy
    /// How a snapshot revert puts the guest back (`revert:`; a guest may override).
    public var revert: RevertMethodChoice = .auto
    public var hooks: Hooks
    /// Passed to QEMU verbatim after everything qlab generates.
    public var qemuArgs: [String]
    /// `labels:`: what a run tests (`firmware: 21.12.1`), in file order; `qlab run --label` overrides them.
    public var labels: [RunLabel] = []
    /// `display:` for every guest that sets none (nil: each OS profile's default).
    public var display: DisplayAdapter? = nil
    /// `trace_qmp: true`: a lab-wide QMP trace in the state directory (``LabRuntime/qmpTracePath``),
    /// kept by the supervisor and every qlab command that talks to the lab.
    public var traceQMP = false
    /// `health_check:`: a test of the lab (its name), or `doctor` (the host
    /// checks of the lab's cards), that `qlab run` runs first; when it fails no
    /// entry runs and the lab's cards are marked bad (``CardHealth``).
    public var healthCheck: String?
    /// The health check that is the doctor's checks of the lab's cards.
    public static let doctorHealthCheck = "doctor"
    /// `matrix: {devices: ...}`: the devices the tests run once per device
    /// with, in file order (empty: no device dimension, every device at once).
    /// See ``DeviceMatrix``.
    public var matrixDevices: [String] = []
    /// Files the lab names that do not exist (yet). Not an error at load time
    /// unless asked for: `qlab args` prints a command line without images.
    public var missingFiles: [MissingFile]
    /// The YAML text this lab was parsed from ("" for a lab made in code):
    /// kept in the lab record, so a running lab is re-made from what it was
    /// planned with, not from a file edited since.
    public var source: String = ""

    public init(
        name: String, file: String, directory: String, qemu: String = Lab.defaultQEMU,
        machine: MachineSettings = MachineSettings(), devices: [LabDevice] = [], guests: [LabGuest] = [],
        tests: [LabTest] = [], strategy: Strategy = .snapshot, hooks: Hooks = Hooks(), qemuArgs: [String] = [],
        missingFiles: [MissingFile] = []
    ) {
        self.name = name
        self.file = file
        self.directory = directory
        self.qemu = qemu
        self.machine = machine
        self.devices = devices
        self.guests = guests
        self.tests = tests
        self.strategy = strategy
        self.hooks = hooks
        self.qemuArgs = qemuArgs
        self.missingFiles = missingFiles
    }

    /// The QEMU for labs that do not name one: `$QLAB_QEMU` when set and not
    /// empty (e.g. the QEMU 10 that scripts/install-qemu10 unpacks), else
    /// `qemu-system-x86_64` from PATH.
    public static var defaultQEMU: String {
        if let value = ThisProcess.environment("QLAB_QEMU"), !value.isEmpty { return value }
        return "qemu-system-x86_64"
    }

    public func guest(named name: String) -> LabGuest? { guests.first { $0.name == name } }
    public func device(named name: String) -> LabDevice? { devices.first { $0.name == name } }
    public func test(named name: String) -> LabTest? { tests.first { $0.name == name } }

    /// The guest named, or the first guest when `name` is nil.
    public func selectGuest(_ name: String?) throws(LabFileError) -> LabGuest {
        if let name {
            if let guest = guest(named: name) { return guest }
            let names = guests.map(\.name)
            var message = "no guest '\(name)' in this lab"
            if let close = Suggestion.closest(to: name, in: names) { message += "; did you mean '\(close)'?" }
            message += names.isEmpty ? "; it has none" : "; its guests: \(names.joined(separator: ", "))"
            throw LabFileError(file: file, keyPath: "guests", message: message)
        }
        guard let first = guests.first else {
            throw LabFileError(file: file, keyPath: "guests", message: "the lab has no guests; add one under `guests:`")
        }
        return first
    }

    /// Throws the first missing file that matters for `guest` (its own files
    /// and every device's disk images); nil checks every file in the lab.
    public func checkFiles(guest: String? = nil) throws(LabFileError) {
        for missing in missingFiles where guest == nil || missing.guest == nil || missing.guest == guest {
            throw missing.error
        }
    }

    /// How `device` is attached when the lab runs `guest`: a hotplug device
    /// is attached at boot instead when the guest's OS cannot hotplug PCI.
    public func effectiveAttach(of device: LabDevice, for guest: LabGuest) -> Attach {
        if device.attach == .hotplug && !guest.profile.hotplug { return .boot }
        return device.attach
    }

    /// Where every device goes when the lab runs `guest` (``DevicePlacement``):
    /// the one place placement is computed, for boot and hotplug alike.
    public func placement(for guest: LabGuest) throws(LabFileError) -> PlacementPlan {
        try DevicePlacement.plan(devices: devices, machineType: machineSettings(for: guest).type)
    }

    /// The devices the test loop plugs in for each run of `guest` (and unplugs after), in file order.
    public func hotplugDevices(for guest: LabGuest) -> [LabDevice] {
        devices.filter { effectiveAttach(of: $0, for: guest) == .hotplug }
    }

    /// The strategy the test loop uses for `guest`: `reset` when the lab asks
    /// for it, and also when a hotplug device must be attached at boot for this
    /// guest (a booted-in passthrough device blocks snapshots).
    public func effectiveStrategy(for guest: LabGuest) -> Strategy {
        if strategy == .reset { return .reset }
        let forcedToBoot = devices.contains { $0.attach == .hotplug && effectiveAttach(of: $0, for: guest) == .boot }
        let passthroughAtBoot = devices.contains { ($0.isPassthrough || $0.hasHostSCSIDevice) && effectiveAttach(of: $0, for: guest) == .boot }
        return forcedToBoot || passthroughAtBoot ? .reset : .snapshot
    }

    /// The revert method `guest` asks for: its own `revert:`, else the lab's.
    public func revertChoice(for guest: LabGuest) -> RevertMethodChoice {
        guest.revert ?? revert
    }

    /// Machine settings for `guest`: its own `machine:` over the lab's over its OS profile.
    public func machineSettings(for guest: LabGuest) -> ResolvedMachine {
        let merged = machine.overridden(by: guest.machine)
        return ResolvedMachine(
            type: merged.type ?? guest.profile.machineType,
            accel: merged.accel ?? .auto,
            cpu: merged.cpu ?? guest.profile.cpu,
            memory: merged.memory ?? guest.profile.memory,
            smp: merged.smp ?? 1
        )
    }
}

/// A file a lab names that does not exist, with the error to report if it must.
public struct MissingFile: Sendable {
    /// The guest the file belongs to; nil for files every guest needs (device disks).
    public var guest: String?
    public var path: String
    public var error: LabFileError
}

/// `machine:` as written; every field optional so guests can override some.
public struct MachineSettings: Sendable, Hashable {
    public var type: String?
    public var accel: AccelMode?
    /// `host`, `max`, or a QEMU CPU model; `host` becomes `max` under TCG.
    public var cpu: String?
    public var memory: ByteSize?
    public var smp: Int?

    public init(type: String? = nil, accel: AccelMode? = nil, cpu: String? = nil, memory: ByteSize? = nil, smp: Int? = nil) {
        self.type = type
        self.accel = accel
        self.cpu = cpu
        self.memory = memory
        self.smp = smp
    }

    public func overridden(by other: MachineSettings) -> MachineSettings {
        MachineSettings(
            type: other.type ?? type, accel: other.accel ?? accel, cpu: other.cpu ?? cpu,
            memory: other.memory ?? memory, smp: other.smp ?? smp)
    }
}

/// Machine settings with every default filled in.
public struct ResolvedMachine: Sendable, Hashable {
    public var type: String
    public var accel: AccelMode
    /// nil: `host` under KVM, `max` under TCG.
    public var cpu: String?
    public var memory: ByteSize
    public var smp: Int
}

/// `machine.accel`.
public enum AccelMode: String, Sendable, CaseIterable {
    /// KVM where it can run a stock guest, TCG otherwise (see ``AccelDecision``).
    case auto
    case kvm
    case tcg
}

/// When qlab attaches a device.
public enum Attach: String, Sendable, CaseIterable {
    /// On QEMU's command line.
    case boot
    /// With device_add once the guest is up (and device_del after each run).
    case hotplug
}

/// How a guest is returned to a clean state between test runs.
public enum Strategy: String, Sendable, CaseIterable {
    /// Revert to a snapshot saved when the guest was ready (hotplug devices unplugged).
    case snapshot
    /// system_reset and boot again (for devices attached at boot).
    case reset
}

/// `revert:`: how snapshot reverts put guest RAM back (docs/devices-snapshots.md).
public enum RevertMethodChoice: String, Sendable, CaseIterable, Codable {
    /// `fast` where it can work, else `loadvm` (the plan says why).
    case auto
    /// Guest RAM in a file; a revert is a fresh QEMU on a copy-on-write map of the snapshot's RAM image.
    case fast
    /// QEMU's own `snapshot-load`/`loadvm` in place (RAM in the qcow2 snapshot).
    case loadvm
}

/// Host-side commands run around each test run and around the whole run
/// (`/bin/sh -c`, in the lab's directory).
public struct Hooks: Sendable, Hashable {
    /// Once before the run's first boot (once under `--jobs` too); its failure makes every entry an `error`.
    public var beforeAll: String?
    /// Once after the run, whatever happened (a failed before_all, failures, a cancelled run).
    public var afterAll: String?
    public var beforeEach: String?
    public var afterEach: String?
    /// How long a hook may run.
    public var timeout: Duration

    public init(beforeAll: String? = nil, afterAll: String? = nil, beforeEach: String? = nil, afterEach: String? = nil,
                timeout: Duration = .seconds(300)) {
        self.beforeAll = beforeAll
        self.afterAll = afterAll
        self.beforeEach = beforeEach
        self.afterEach = afterEach
        self.timeout = timeout
    }
}

/// A device's own hooks (`devices: NAME: hooks:`): run around each entry
/// whose guest has the device, inside the lab's before_each/after_each.
public struct DeviceHooks: Sendable, Hashable {
    public var beforeEach: String?
    public var afterEach: String?
    /// nil: the lab's `hooks.timeout`.
    public var timeout: Duration?

    public init(beforeEach: String? = nil, afterEach: String? = nil, timeout: Duration? = nil) {
        self.beforeEach = beforeEach
        self.afterEach = afterEach
        self.timeout = timeout
    }
}

/// A test: a shell command run in the guest, judged by exit status and output.
public struct LabTest: Sendable, Hashable {
    public var name: String
    /// The command line given to the guest's shell.
    public var run: String
    /// Every string must appear in the output.
    public var expect: [String]
    /// The exit status that means success.
    public var status: Int32
    public var timeout: Duration
    /// The guests the test runs in; nil means all of them.
    public var guests: [String]?
    /// Texts the guest's screen (VGA text mode) must show after `run` (or alone), each within `timeout`.
    public var screenExpect: [String] = []
    /// The devices of the lab's device dimension this test runs with (nil: all of them).
    public var devices: [String]?
    /// Keys typed after `run` (or alone), with waits for the screen between them (``KeyStep``).
    public var keys: [KeyStep] = []
    /// The test starts with a system reset, so the firmware's screens come again (for `keys` and `screen_expect`).
    public var reset = false

    public init(name: String, run: String, expect: [String] = [], status: Int32 = 0, timeout: Duration = .seconds(60), guests: [String]? = nil) {
        self.name = name
        self.run = run
        self.expect = expect
        self.status = status
        self.timeout = timeout
        self.guests = guests
    }

    public func applies(to guest: String) -> Bool { guests?.contains(guest) ?? true }
    /// True when the test runs with `device` (nil: a lab without a device dimension).
    public func applies(toDevice device: String?) -> Bool { device.map { devices?.contains($0) ?? true } ?? true }
}
