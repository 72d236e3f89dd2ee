import Foundation
import LabCore
import QMP
import Testing

/// A snapshot command killed mid-job leaves its job in QEMU; the next one settles it first.
@Suite("Snapshot jobs left by a killed command (real QEMU)", .serialized)
struct SnapshotJobTests {
    @Test func aJobLeftBehindIsSettledAndDismissedBeforeTheNext() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try LifecycleTests.bareLab(env, name: "jobs")
        #expect(try env.qlab("up", lab, "--paused").status == 0)
        // What a `qlab snapshot save` killed after QEMU took its job leaves: a qlab job nobody dismisses.
        let orphan = try env.qlab("qmp", "jobs", "snapshot-save",
            #"{"job-id": "qlab-save-orphan", "tag": "orphan", "vmstate": "qlab-disk-fmt", "devices": ["qlab-disk-fmt"]}"#)
        #expect(orphan.status == 0, "\(orphan.output)")
        let next = try env.qlab("snapshot", "save", "jobs", "after")
        #expect(next.status == 0, "\(next.output)")
        let jobs = try JSONValue.parse(try env.qlab("qmp", "jobs", "query-jobs").stdout)
        #expect(jobs.arrayValue?.isEmpty == true, "the orphan job was dismissed: \(jobs)")
        let list = try env.qlab("snapshot", "list", "jobs").stdout
        #expect(list.contains("orphan") && list.contains("after"), "\(list)")
        #expect(try env.qlab("down", "jobs").status == 0)
    }
}
