import Foundation
import LabCore
import Testing

/// Messages read as sentences: every part after a `;`, no placeholder (`LAB`,
/// `LABFILE`) where qlab knows the name, and YAML's syntax errors say what to do.
@Suite("Message wording")
struct MessageWordingTests {
    @Test func unknownEmulatedControllerListsTheKnownOnesAfterASeparator() throws {
        let yaml = "name: t\ndevices:\n  d:\n    emulated: {driver: zzzzzz}\nguests: {g: {os: linux, kernel: k}}\n"
        let error = try #require(try LabFixtures.loadError(yaml))
        let known = EmulatedController.knownDrivers.map(\.driver).joined(separator: ", ")
        #expect(error.message == "'zzzzzz' is not an emulated controller qlab knows; known: \(known)", "\(error)")
        // With a near name, the suggestion comes last.
        let near = try #require(try LabFixtures.loadError(yaml.replacingOccurrences(of: "zzzzzz", with: "am53c97")))
        #expect(near.message == "'am53c97' is not an emulated controller qlab knows; known: \(known); did you mean 'am53c974'?", "\(near)")
    }

    @Test func unknownGuestListsTheGuestsAfterASeparator() throws {
        let dir = try LabTempDirectory()
        defer { dir.remove() }
        let lab = try LabFixtures.load("name: t\nguests:\n  linux: {os: linux, kernel: vmlinuz}\n", in: dir)
        do {
            _ = try lab.selectGuest("nosuch")
            Issue.record("selected a guest that does not exist")
        } catch {
            #expect(error.message == "no guest 'nosuch' in this lab; its guests: linux", "\(error)")
        }
    }

    @Test func errorsNameTheLabInsteadOfAPlaceholder() {
        #expect(DeviceError.alreadyAttached(device: "dc390", state: "hotplug", lab: "bench").description
            == "device dc390 is already attached (hotplug); `qlab unplug bench dc390` first")
        #expect(DeviceError.notAttached(device: "dc390", lab: "bench").description
            == "device dc390 is not attached; `qlab hotplug bench dc390` attaches it")
        #expect(LabError.notRunning("bench").description == "lab bench is not running; start it with `qlab up bench` (its last lab file)")
        #expect(LabError.stillRunning(lab: "bench", pid: 12, supervisorPID: 11).description
            == "lab bench is running (QEMU pid 12, supervisor pid 11); `qlab down bench` first, then `qlab rm bench`")
        #expect(SnapshotError.notFound(tag: "s1", available: [], lab: "bench").description
            == "no snapshot 's1' (the lab has none; `qlab snapshot save bench s1` makes one)")
        #expect(SnapshotError.alreadyExists(tag: "s1", lab: "bench").description
            == "a snapshot 's1' exists already; delete it first (`qlab snapshot delete bench s1`) or save with --replace")
        // No message of these keeps a placeholder for a name it has.
        let all = [
            DeviceError.unplugTimedOut(device: "d", waited: .seconds(1), lab: "bench").description,
            DeviceError.guestCannotUnplug(device: "d", vmStatus: "paused", lab: "bench").description,
            DeviceError.stillPresent(device: "d", lab: "bench").description,
            SnapshotError.timedOut(operation: "save", tag: "s1", waited: .seconds(1), lab: "bench").description,
            LabError.preflightFailed(lab: "bench", problems: "x").description,
        ]
        for text in all {
            #expect(!text.contains(" LAB") && !text.contains("LABFILE"), "\(text)")
            #expect(text.contains("bench"), "\(text)")
        }
    }

    /// A tab where YAML wants indentation: the file, line and column, and "use spaces".
    @Test func aTabSaysTabsAreNotAllowed() throws {
        let error = try #require(try LabFixtures.loadError("name: t\nguests:\n\tlinux: {os: linux, kernel: k}\n"))
        #expect(error.line == 3, "\(error)")
        #expect(error.column != nil, "\(error)")
        #expect(error.message.hasPrefix("YAML syntax: "), "\(error)")
        #expect(error.message.hasSuffix("; tabs are not allowed in YAML: indent with spaces"), "\(error)")
        #expect(error.description.hasPrefix("\(error.file):3:\(error.column ?? 0): "), "\(error)")
    }

    /// `ready: login:` is two mappings to YAML: the error says to quote the value.
    @Test func anUnquotedColonSaysQuoteIt() throws {
        let yaml = "name: t\nguests:\n  linux:\n    os: linux\n    kernel: k\n    ready: login:\n"
        let error = try #require(try LabFixtures.loadError(yaml))
        #expect(error.line == 6, "\(error)")
        #expect(error.message.contains("mapping values are not allowed"), "\(error)")
        #expect(error.message.hasSuffix("; a value containing ': ' or ending in ':' must be quoted, e.g. ready: \"login:\""), "\(error)")
        #expect(error.description.hasPrefix("\(error.file):6:"), "\(error)")
        // Quoted, the same value loads.
        #expect(try LabFixtures.loadError(yaml.replacingOccurrences(of: "ready: login:", with: "ready: \"login:\"")) == nil)
    }

    /// `qlab rm` needs a lab or --all, not both; `rm --all` with no labs says so and exits 0.
    @Test func removeAllUsage() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let neither = try env.qlab("rm")
        #expect(neither.status == 2, "\(neither.output)")
        #expect(neither.stderr.contains("give the lab to remove (a name from `qlab list`, or its file), or --all"), "\(neither.stderr)")
        let both = try env.qlab("rm", "x", "--all")
        #expect(both.status == 2, "\(both.output)")
        #expect(both.stderr.contains("give a lab or --all, not both"), "\(both.stderr)")
        let none = try env.qlab("rm", "--all")
        #expect(none.status == 0, "\(none.output)")
        #expect(none.stdout == "no labs\n", "\(none.stdout)")
    }
}
