import Foundation
import LabCore
import QMP
import Testing

/// The serial console and `qlab exec` against the real test guest
/// (images/out/linux, built by images/build.sh) under TCG. One boot serves
/// each test; every test takes its lab down, also when it fails.
@Suite("Guest console (real test guest, TCG)", .serialized)
struct GuestConsoleQEMUTests {
    static let imageDirectory = LabFixtures.repositoryRoot + "/images/out/linux"

    /// A lab with the test guest and nothing else.
    static func guestLab(_ env: QLabTestEnvironment, name: String = "gc", agent: Bool = false) throws -> String {
        for file in ["vmlinuz", "initrd.img", "disk.qcow2"] where !FileManager.default.fileExists(atPath: imageDirectory + "/" + file) {
            Issue.record("\(imageDirectory)/\(file) is missing: run images/build.sh first")
        }
        return try env.writeLab(name, """
            name: \(name)
            machine: {type: q35, accel: tcg, memory: 256M}
            guests:
              linux:
                os: linux
                kernel: \(imageDirectory)/vmlinuz
                initrd: \(imageDirectory)/initrd.img
                append: console=ttyS0 quiet loglevel=3 panic=-1
                disk: \(imageDirectory)/disk.qcow2
                ready: qlab-guest-ready
                prompt: "# "
                boot_timeout: 180s
                agent: \(agent)
            """)
    }

    /// `up` in this process: a `qlab up` child run through Foundation's Process
    /// hands an inherited socket on to the supervisor and QEMU, so reading the
    /// child's output to its end would wait for the lab to stop.
    static func up(_ env: QLabTestEnvironment, _ lab: String) async throws {
        _ = try await env.controller.up(labFile: lab, options: LabController.UpOptions())
    }

    static func bootedConsole(_ env: QLabTestEnvironment, lab: String, name: String = "gc") async throws -> (GuestConsole, LabGuest) {
        try await up(env, lab)
        let console = try GuestConsole.connect(runtime: env.runtime(name))
        let guest = try Lab.load(path: lab).selectGuest(nil)
        return (console, guest)
    }

    @Test func runsCommandsAndRecoversFromAHang() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let (console, guest) = try await Self.bootedConsole(env, lab: try Self.guestLab(env))
        defer { console.close() }

        let readiness = try await console.waitForReady(guest)
        #expect(readiness.evidence != .probe)

        let hello = try await console.run("echo hello", timeout: .seconds(30))
        #expect(hello.output == "hello\n")
        #expect(hello.exitStatus == 0)
        #expect(hello.errorOutput == nil)
        #expect(!hello.truncated)

        let falseResult = try await console.run("false", timeout: .seconds(30))
        #expect(falseResult.exitStatus == 1)
        #expect(falseResult.output == "")

        // The command runs in a subshell: its exit ends only itself.
        let exited = try await console.run("echo bye; exit 7", timeout: .seconds(30))
        #expect(exited.exitStatus == 7)
        #expect(exited.output == "bye\n")

        let lines = try await console.run("for i in 1 2 3; do echo line$i; done; echo err >&2", timeout: .seconds(30))
        #expect(lines.output == "line1\nline2\nline3\nerr\n")

        let noNewline = try await console.run("printf abc", timeout: .seconds(30))
        #expect(noNewline.output == "abc")

        // Text that looks like qlab's markers (another nonce, or none) is output like any other.
        let lookalike = try await console.run(
            "echo __QLAB_END_0123456789abcdef__=0; echo __QLAB_BEGIN_0123456789abcdef__; printf '%s%s=%d\\n' __QLAB_E ND_ 5; exit 4",
            timeout: .seconds(30))
        #expect(lookalike.output == "__QLAB_END_0123456789abcdef__=0\n__QLAB_BEGIN_0123456789abcdef__\n__QLAB_END_=5\n")
        #expect(lookalike.exitStatus == 4)

        // Quotes, a tab, a here-document over several lines.
        let tricky = try await console.run("printf '%s\\n' \"it's\" '$HOME'\ncat <<EOF\na\tb\nEOF", timeout: .seconds(30))
        #expect(tricky.output == "it's\n$HOME\na\tb\n")
        #expect(tricky.exitStatus == 0)

        // Standard input is /dev/null: a command that reads it does not eat what qlab types next.
        let reader = try await console.run("cat; echo read-done", timeout: .seconds(30))
        #expect(reader.output == "read-done\n")

        // Longer than a console line: typed into a file in chunks, then run.
        let word = String(repeating: "x", count: 5000)
        let long = try await console.run("echo \(word) | wc -c; echo '\(word.prefix(10))'", timeout: .seconds(60))
        #expect(long.output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) } == ["5001", "xxxxxxxxxx"])
        let leftovers = try await console.run("ls -a /tmp | grep -c qlab-cmd", timeout: .seconds(30))
        #expect(leftovers.output == "0\n")

        // A kernel message printed while commands run does not break the framing.
        let kernel = try await console.run("echo '<1>qlab-kmsg-test' > /dev/kmsg; echo after-kmsg", timeout: .seconds(30))
        #expect(kernel.exitStatus == 0)
        #expect(kernel.output.contains("after-kmsg"))

        // A command that never returns: a timeout naming the console's tail, Ctrl-C, and the console works again.
        do {
            _ = try await console.run("echo going-to-sleep; sleep 1000", timeout: .seconds(3))
            Issue.record("sleep 1000 returned")
        } catch let error as GuestError {
            guard case .commandTimeout(_, _, let recovered, let tail) = error else {
                Issue.record("expected a command timeout, got \(error)")
                return
            }
            #expect(recovered)
            #expect(tail.contains("going-to-sleep"))
            #expect(!tail.contains("__QLAB_BEGIN_"))  // qlab's markers are left out of the tail
            #expect(error.description.contains("sleep 1000"))
        }
        let after = try await console.run("echo recovered", timeout: .seconds(30))
        #expect(after.output == "recovered\n")
        #expect(after.exitStatus == 0)

        // Round trips, for the record (not asserted).
        let clock = ContinuousClock()
        let count = 20
        let started = clock.now
        for _ in 0..<count { _ = try await console.run("true", timeout: .seconds(30)) }
        let each = started.duration(to: clock.now) / count
        print("guest console: round trip of `true` over the console: \(each)")
    }

    @Test func readyTextAlreadyPrintedAndAfterAReset() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.guestLab(env)
        let (first, guest) = try await Self.bootedConsole(env, lab: lab)
        try await first.waitForReady(guest)
        first.close()

        // A new connection after the guest printed its ready text finds it in the console log.
        let runtime = env.runtime("gc")
        let console = try GuestConsole.connect(runtime: runtime)
        defer { console.close() }
        let again = try await console.waitForReady(guest, timeout: .seconds(30))
        #expect(again.evidence == .log)
        #expect(try await console.run("echo second", timeout: .seconds(30)).output == "second\n")

        // After a reset: this boot's ready text, from the log offset taken before it.
        let logPath = try #require(try runtime.record?.consoleLog)
        let offset = ConsoleLog.size(logPath)
        let qmp = try await QMPClient.connect(path: runtime.qmpSocketPath)
        defer { qmp.close() }
        _ = try await qmp.execute("system_reset")
        let reset = try await console.waitForReady(guest, since: offset)
        #expect(reset.evidence != .probe)
        let uptime = try await console.run("cut -d. -f1 /proc/uptime", timeout: .seconds(30))
        let seconds = Int(uptime.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        #expect(seconds >= 0 && seconds < 600, "uptime \(uptime.output)")
    }

    @Test func qlabExecEndToEnd() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        // With a guest agent channel, but no qemu-ga in the test guest: exec falls back to the console.
        let lab = try Self.guestLab(env, agent: true)
        try await Self.up(env, lab)

        // --ready waits for the boot; stdout is the command's, the exit status too.
        let first = try env.qlab("exec", "gc", "--ready", "--", "echo out; echo two words; exit 3")
        #expect(first.status == 3, "\(first.stderr)")
        #expect(first.stdout == "out\ntwo words\n")

        // The words after -- are joined into one command line.
        let joined = try env.qlab("exec", "gc", "--", "printf", "'%s-'", "a", "b")
        #expect(joined.status == 0, "\(joined.stderr)")
        #expect(joined.stdout == "a-b-")

        let timeout = try env.qlab("exec", "gc", "--timeout", "2", "--", "echo about-to-hang; sleep 1000")
        #expect(timeout.status == 124)
        #expect(timeout.stderr.contains("did not finish within 2 s"))
        #expect(timeout.stderr.contains("about-to-hang"))

        let next = try env.qlab("exec", "gc", "--", "echo fine")
        #expect(next.status == 0, "\(next.stderr)")
        #expect(next.stdout == "fine\n")

        // QEMU serves one console client: while qlab holds it here, exec says so instead of hanging.
        let holder = try GuestConsole.connect(runtime: env.runtime("gc"))
        #expect(try await holder.probe())
        let held = try env.qlab("exec", "gc", "--timeout", "2", "--", "echo never")
        #expect(held.status == 125)
        #expect(held.stderr.contains("another client may hold the console"))
        #expect(!held.stdout.contains("never"))
        holder.close()
        let free = try env.qlab("exec", "gc", "--", "echo free-again")
        #expect(free.status == 0, "\(free.stderr)")
        #expect(free.stdout == "free-again\n")

        // The agent channel: QEMU serves its socket, the guest sees the port qemu-ga would open.
        let runtime = env.runtime("gc")
        #expect(FileManager.default.fileExists(atPath: runtime.agentSocketPath))
        let port = try env.qlab("exec", "gc", "--via", "console", "--", "cat /sys/class/virtio-ports/*/name")
        #expect(port.stdout == "org.qemu.guest_agent.0\n", "\(port.stderr)")
        let agent = try env.qlab("exec", "gc", "--via", "agent", "--", "true")
        #expect(agent.status == 125)
        #expect(agent.stderr.contains("qemu-ga"))

        // The exit-code table: a lab with no record is "no such lab", exit 3.
        let notRunning = try env.qlab("exec", "no-such-lab", "--", "true")
        #expect(notRunning.status == ExitStatus.noSuchLab.rawValue)
        #expect(notRunning.stderr.contains("no such lab no-such-lab"))

        // Issue 10's table: no command is a usage error, exit 2.
        let noCommand = try env.qlab("exec", "gc")
        #expect(noCommand.status == ExitStatus.usage.rawValue)

        #expect(try env.qlab("down", "gc").status == 0)
        #expect(!FileManager.default.fileExists(atPath: runtime.agentSocketPath))
    }
}
