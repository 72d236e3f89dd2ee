import Platform
import QMP
import Synchronization

/// An open connection to a running lab: its record, the lab as it was
/// planned (from the record, not the lab file as edited since) and the user
/// QMP monitor. Hotplug, snapshots, reset and test runs work through one
/// session, because QEMU serves one client per QMP socket at a time.
public final class LabSession: Sendable {
    public let runtime: LabRuntime
    public let lab: Lab
    public let record: LabRecord
    /// The user QMP monitor of the QEMU running now: a fast revert replaces
    /// QEMU, and the session reconnects by the same path (``replaceMonitor()``).
    public var qmp: QMPClient { monitor.withLock { $0 } }
    private let monitor: Mutex<QMPClient>
    /// Where the lab's devices go (the boot placement, computed once): hotplug uses it.
    public let placement: PlacementPlan?
    /// Whether snapshot jobs an earlier, killed command left behind were
    /// settled: once per session is enough, since this session's own jobs
    /// are always awaited and dismissed (the revert loop pays it once).
    private let earlierJobsSettled = Mutex(false)

    /// True the first time it is asked, false after.
    func claimFirstSnapshotJob() -> Bool {
        earlierJobsSettled.withLock { settled in
            defer { settled = true }
            return !settled
        }
    }

    public init(runtime: LabRuntime, lab: Lab, record: LabRecord, qmp: QMPClient) {
        self.runtime = runtime
        self.lab = lab
        self.record = record
        self.monitor = Mutex(qmp)
        self.placement = (try? lab.selectGuest(record.guest)).flatMap { try? lab.placement(for: $0) }
    }

    /// Opens a session on the running lab named `nameOrFile`.
    public static func open(_ nameOrFile: String, environment: [String: String] = currentEnvironment()) async throws -> LabSession {
        let runtime = try LabRuntime.locate(nameOrFile, environment: environment)
        return try await open(runtime: runtime)
    }

    /// `reconcilingDevices`: first make the record's device states, and a
    /// snapshot step a killed command left, agree with QEMU
    /// (``reconcileSnapshotStep()``, ``reconcileDeviceStates()``); it writes
    /// the record, so only a caller holding the lab's lock may ask for it.
    public static func open(
        runtime: LabRuntime, connectTimeout: Duration = .seconds(10), reconcilingDevices: Bool = false
    ) async throws -> LabSession {
        try runtime.checkDirectories()
        // A record that does not decode is an error naming its file and field.
        guard let record = try runtime.records.read(), runtime.liveQEMU(record) != nil else {
            throw LabError.notRunning(runtime.name)
        }
        let lab = try record.lab()
        let qmp = try await runtime.connectQMP(timeout: connectTimeout)
        let session = LabSession(runtime: runtime, lab: lab, record: record, qmp: qmp)
        guard reconcilingDevices else { return session }
        // An earlier command killed half-way may have left the record behind QEMU:
        // a snapshot step first (finishing it may replace QEMU), then devices.
        do {
            let stepChanged = try await session.reconcileSnapshotStep()
            let devicesChanged = try await !session.reconcileDeviceStates().isEmpty
            guard stepChanged || devicesChanged else { return session }
            return LabSession(runtime: runtime, lab: lab, record: session.currentRecord, qmp: session.qmp)
        } catch {
            session.qmp.close()
            throw error
        }
    }

    /// The guest this lab was started with.
    public var guest: LabGuest {
        get throws { try lab.selectGuest(record.guest) }
    }

    /// The lab record now, as the lab's ``LabRecordStore`` holds it (read
    /// once, then as this session wrote it; ``record`` is as it was when the
    /// session opened). Device states are read here, not from `lab.json` once
    /// per device: commands that change them hold the lab's lock, so no other
    /// process writes them meanwhile.
    public var currentRecord: LabRecord { (try? runtime.records.read()) ?? record }

    /// Changes the record and replaces `lab.json` with it (atomically, in
    /// the checked runtime dir, through the store); the store's copy changes only once written.
    func updateRecord(_ change: (inout LabRecord) -> Void) throws {
        try runtime.records.update(change)
    }

    public func close() {
        qmp.close()
    }

    /// After the supervisor replaced QEMU: connect to the new QEMU's user
    /// monitor (same socket path), close the old connection, and take the
    /// record the supervisor wrote (new pid, mapped snapshot).
    func replaceMonitor() async throws {
        let fresh = try await runtime.connectQMP(timeout: .seconds(10))
        let old = monitor.withLock { client in
            defer { client = fresh }
            return client
        }
        old.close()
        // Another process (the supervisor) wrote lab.json: the store's copy is stale.
        _ = try? runtime.records.reload()
    }

    /// Updates one device's state in the lab record.
    public func setDeviceState(_ device: String, _ state: DeviceState) throws {
        try setDeviceStates([(device, state)])
    }
}
