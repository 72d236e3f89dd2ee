import Foundation
import LabCore
import Testing

@testable import LabCore

/// The GRUB test guest (images/out/grub, built by images/build.sh grub): GRUB's
/// shell on serial, reading the target disk through SeaBIOS's driver for the
/// card, under TCG. Framing first without QEMU, then the real guest.
@Suite("GRUB guest (framing; real GRUB under TCG)", .serialized)
struct GrubGuestTests {
    static let grubImage = LabFixtures.repositoryRoot + "/images/out/grub/grub.lnx"
    static var haveImage: Bool { FileManager.default.fileExists(atPath: grubImage) }
    struct ImageMissing: Error, CustomStringConvertible {
        let path: String
        var description: String { "\(path) is missing: run images/build.sh grub (the README's test command builds it)" }
    }

    // MARK: Framing (no QEMU)

    @Test func grubLineEvaluatesTheQuotedCommandAndPrintsItsStatus() throws {
        let framing = ConsoleCommandFraming(nonce: "0123456789abcdef", shell: .grub)
        guard case .line(let line) = try framing.plan("echo it's", maximumLineBytes: 1000) else {
            Issue.record("a GRUB command was chunked")
            return
        }
        #expect(line == #"echo "__QLAB_B""EGIN_0123456789abcdef__"; eval 'echo it'\''s'; qlab_status=$?; echo; echo "__QLAB_E""ND_0123456789abcdef__=$qlab_status""#)
        #expect(!line.contains(framing.beginMarker))
        #expect(!line.contains(framing.endMarker))
    }

    @Test func grubRefusesWhatItsConsoleCannotTake() {
        let framing = ConsoleCommandFraming(shell: .grub)
        for command in ["ls\nhexdump (hd0)", "echo \u{3}", "a\u{7f}", "x\u{0}y"] {
            #expect(throws: GuestError.self, "\(command.debugDescription)") { try framing.plan(command, maximumLineBytes: 1000) }
        }
        do {
            _ = try framing.plan("echo " + String(repeating: "x", count: 2000), maximumLineBytes: 1000)
            Issue.record("a 2005-byte GRUB command was accepted")
        } catch {
            #expect("\(error)".contains("at most 1000 bytes"))
        }
    }

    @Test func grubErrorLineWithZeroStatusIsAFailure() {
        let grub = ConsoleCommandFraming(shell: .grub)
        #expect(grub.exitStatus(reported: 0, output: "error: can't find command `nosuch'.\n") == ConsoleCommandFraming.grubFailedStatus)
        #expect(grub.exitStatus(reported: 0, output: "(hd0) (hd1)\n") == 0)
        #expect(grub.exitStatus(reported: 0, output: "no error: here\n") == 0)
        #expect(grub.exitStatus(reported: 17, output: "error: x\n") == 17)
        // A POSIX shell's status is its own, whatever the output says.
        #expect(ConsoleCommandFraming().exitStatus(reported: 0, output: "error: x\n") == 0)
    }

    @Test func grubOutputDropsItsLineEndCarriageReturns() {
        let bytes = Array("(hd0) (hd1)\n\r\n\r".utf8)
        #expect(ConsoleCommandFraming.output(from: bytes[...], dropAllReturns: true) == "(hd0) (hd1)\n")
    }

    @Test func grubProfileIsAResetGuestWithoutLoginOrAgent() {
        let profile = OSProfile.profile(for: .grub)
        #expect(profile.shell == .grub)
        #expect(!profile.hotplug)
        #expect(profile.prompt == "grub> ")
        #expect(profile.loginPrompt.isEmpty)
        #expect(OSProfile.profile(for: .linux).shell == .posix)
    }

    // MARK: The real GRUB guest

    /// A lab with the GRUB guest and an lsi53c895a carrying the target disk, attached at boot.
    /// A missing image fails the test (the README's test command builds it), as RunLoopTests' do.
    static func grubLab(_ env: QLabTestEnvironment, name: String, tests: String = "") throws -> String {
        guard haveImage else { throw ImageMissing(path: grubImage) }
        return try env.writeLab(name, """
            name: \(name)
            machine: {type: q35, accel: tcg, memory: 128M, smp: 1}
            devices:
              scsi-lsi:
                emulated: {driver: lsi53c895a, disks: [{image: \(QLabTestEnvironment.imagesOut)/scsi-target.qcow2}]}
                attach: boot
            guests:
              grub:
                os: grub
                kernel: \(grubImage)
                ready: qlab-guest-ready
                prompt: "grub> "
                boot_timeout: 120s
            \(tests)
            strategy: reset
            """)
    }

    @Test
    func consoleRunsGrubCommands() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.grubLab(env, name: "gg")
        _ = try await env.controller.up(labFile: lab, options: LabController.UpOptions())
        let console = try GuestConsole.connect(runtime: env.runtime("gg"))
        defer { console.close() }
        #expect(console.options.shell == .grub)
        let readiness = try await console.waitForReady(try Lab.load(path: lab).selectGuest(nil))
        #expect(readiness.evidence != .probe)

        let hello = try await console.run("echo hello", timeout: .seconds(30))
        #expect(hello.output == "hello\n")
        #expect(hello.exitStatus == 0)

        let failing = try await console.run("false", timeout: .seconds(30))
        #expect(failing.exitStatus == 1)

        // GRUB leaves $? at 0 for a command it does not know; its error line makes it a failure.
        let unknown = try await console.run("nosuchcommand", timeout: .seconds(30))
        #expect(unknown.exitStatus == ConsoleCommandFraming.grubFailedStatus)
        #expect(unknown.output.contains("can't find command"))

        let quoted = try await console.run("echo \"it's\" '$x'", timeout: .seconds(30))
        #expect(quoted.output == "it's $x\n")

        // The disk SeaBIOS made of the card's target, and its sector 0.
        let disks = try await console.run("ls", timeout: .seconds(30))
        #expect(disks.output.contains("(hd0)"))
        let sector0 = try await console.run("hexdump -n 32 (hd0)", timeout: .seconds(30))
        #expect(sector0.output.contains("|QLAB-SCSI-TARGET|"))
        #expect(sector0.exitStatus == 0)
        let missing = try await console.run("hexdump -n 32 (hd7)", timeout: .seconds(30))
        #expect(missing.exitStatus != 0)

        // 128 distinct lines (the target's records from sector 1 on), more than a screen: no pager stops it.
        let long = try await console.run("hexdump -s 512 -n 2048 (hd0)", timeout: .seconds(60))
        #expect(long.output.split(separator: "\n").count == 128)
        #expect(!long.output.contains("MORE"))

        // A command that outlasts its timeout is a command timeout naming it. GRUB's `sleep`
        // does not stop at Ctrl-C, so the console does not answer again within the probes.
        await #expect {
            _ = try await console.run("sleep 20", timeout: .seconds(2))
        } throws: { error in
            guard case GuestError.commandTimeout(let command, let seconds, _, _) = error else { return false }
            return command == "sleep 20" && seconds == 2
        }
        console.close()

        // `qlab exec` frames the same way (the console takes one client: ours is closed).
        let listed = try env.qlab("exec", "gg", "--", "ls", "(hd0)")
        #expect(listed.status == 0, "\(listed.output)")
        #expect(listed.stdout.contains("Device hd0:"))
        #expect(listed.stdout.contains("Total size 16384KiB"))
        let unknownCommand = try env.qlab("exec", "gg", "--", "nosuchcommand")
        #expect(unknownCommand.status == ConsoleCommandFraming.grubFailedStatus, "\(unknownCommand.output)")
    }

    @Test
    func execAndRunLoopWithReset() async throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.grubLab(env, name: "gr", tests: """
            tests:
              controller:
                run: lspci
                expect: "1000:0012"
              target:
                run: hexdump -n 32 (hd0)
                expect: "|QLAB-SCSI-TARGET|"
              absent-disk:
                run: ls (hd5)
            """)
        let report = env.root + "/report.json"
        let run = try env.qlab(["run", lab, "--repeat", "2", "--json-report", report])
        #expect(run.status == 1, "absent-disk must fail: \(run.output)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any])
        let results = try #require(json["results"] as? [[String: Any]])
        #expect(results.count == 6)
        for (index, result) in results.enumerated() {
            let test = result["test"] as? String
            #expect(result["outcome"] as? String == (test == "absent-disk" ? "failed" : "passed"), "\(result)")
            // The first run starts on the fresh boot; every later one after a system reset.
            let steps = (result["steps"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []
            #expect(steps.contains("reset") == (index > 0), "\(test ?? "?"): \(steps)")
        }
        #expect(env.qemuProcesses().isEmpty)
    }

    /// `qlab guest check` passes every step that applies to GRUB and says why it skips the rest.
    @Test func guestCheckPassesWhatAppliesAndSkipsTheRest() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let lab = try Self.grubLab(env, name: "gk")
        let check = try env.qlab("guest", "check", lab, "grub")
        #expect(check.status == 0, "\(check.output)")
        let lines = check.stdout.split(separator: "\n").map(String.init)
        for step in ["command exit status", "command output", "command with quotes", "reset to ready", "scsi-lsi: attached at boot", "SCSI disks visible in the guest"] {
            #expect(lines.contains { $0.hasPrefix("PASS  \(step)") }, "\(step): \(check.stdout)")
        }
        #expect(lines.contains { $0.hasPrefix("SKIP  console login:") })
        #expect(lines.contains { $0.hasPrefix("SKIP  long command line: GRUB takes a command as one line") })
        #expect(lines.contains { $0.hasPrefix("SKIP  Ctrl-C recovery: GRUB's commands do not stop at Ctrl-C") })
        #expect(lines.contains { $0.hasPrefix("PASS  SCSI disks visible in the guest") && $0.contains("(hd0)") })
        #expect(!lines.contains { $0.hasPrefix("FAIL") })
        #expect(env.qemuProcesses().isEmpty)
    }
}
