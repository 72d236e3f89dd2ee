import Foundation
import LabCore
import Platform
import QMP
import Testing

/// `qlab events --follow` waits on inotify, not a timer (issue 11).
@Suite("events --follow (real QEMU)", .serialized)
struct EventsFollowTests {
    /// A follower started on a paused lab prints the RESUME the supervisor
    /// appends after `cont`, while it waits on inotify watches (its fdinfo
    /// shows them), and ends by itself when the lab goes down.
    @Test(.enabled(if: DeviceLabFixture.haveGuestImages, "run images/build.sh first"))
    func aFollowerPrintsAnAppendedEventAndEndsWithTheLab() async throws {
        let fixture = try DeviceLabFixture()
        defer { fixture.cleanUp() }
        let lab = try fixture.bareLab()
        let up = try await fixture.controller.up(labFile: lab, options: LabController.UpOptions(paused: true))
        let name = up.record.name

        var ends: [Int32] = [-1, -1]
        try #require(pipe(&ends) == 0)
        let follower = try ChildProcess.spawn(
            executable: QLabTestEnvironment.qlabExecutable, arguments: ["events", "--follow", "--json", name],
            environment: fixture.environment, stdout: .descriptor(ends[1]), stderr: .inherit)
        close(ends[1])
        let output = LineReader(fd: ends[0])
        defer {
            if follower.poll() == nil {
                kill(follower.pid, SIGKILL)  // our own child
                _ = follower.wait()
            }
            close(ends[0])
        }

        // The follower prints what comes after it started: `cont` once it waits (its watches are set).
        #expect(waitUntil(limit: .seconds(60)) { Self.inotifyWatches(of: follower.pid) >= 2 }, "the follower never set its watches")
        let session = try await LabSession.open(runtime: fixture.runtime(name))
        _ = try await session.qmp.execute("cont")
        session.close()

        let resumed = output.firstLine(containing: "\"RESUME\"", within: .seconds(60))
        #expect(resumed != nil, "the follower printed: \(output.lines)")
        #expect(Self.inotifyWatches(of: follower.pid) >= 2, "the follower waits on inotify watches of the state and runtime dirs")

        await fixture.down(name)
        #expect(output.readToEnd(within: .seconds(60)), "the follower did not end with the lab")
        #expect(await follower.wait(timeout: .seconds(30)) == .exited(0))
        #expect(fixture.qemuProcesses().isEmpty)
    }

    /// `inotify wd:` lines in /proc/PID/fdinfo: the watches the process holds.
    static func inotifyWatches(of pid: pid_t) -> Int {
        let fds = HostFiles.list("/proc/\(pid)/fd") ?? []
        return fds.reduce(0) { count, fd in
            let info = HostFiles.readText("/proc/\(pid)/fdinfo/\(fd)") ?? ""
            return count + info.split(separator: "\n").filter { $0.hasPrefix("inotify wd:") }.count
        }
    }
}

/// Lines from a pipe, read with `poll(2)` up to a deadline (a bound so a
/// broken follower fails the test instead of hanging it; nothing is timed).
final class LineReader {
    let fd: Int32
    private(set) var lines: [String] = []
    private var partial: [UInt8] = []
    private(set) var ended = false

    init(fd: Int32) { self.fd = fd }

    func firstLine(containing text: String, within limit: Duration) -> String? {
        let deadline = ContinuousClock.now + limit
        while true {
            if let line = lines.first(where: { $0.contains(text) }) { return line }
            guard !ended, readSome(until: deadline) else { return nil }
        }
    }

    /// True when the writer closed the pipe before the deadline.
    func readToEnd(within limit: Duration) -> Bool {
        let deadline = ContinuousClock.now + limit
        while !ended {
            guard readSome(until: deadline) else { return ended }
        }
        return true
    }

    private func readSome(until deadline: ContinuousClock.Instant) -> Bool {
        let left = deadline - ContinuousClock.now
        guard left > .zero else { return false }
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&poller, 1, Int32(left.components.seconds * 1000 + 1))
        guard ready > 0 else { return ready < 0 && errno == EINTR }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = read(fd, &buffer, buffer.count)
        if count <= 0 {
            ended = true
            return true
        }
        partial += buffer[0..<count]
        while let newline = partial.firstIndex(of: 0x0A) {
            lines.append(String(decoding: partial[..<newline], as: UTF8.self))
            partial.removeSubrange(...newline)
        }
        return true
    }
}
