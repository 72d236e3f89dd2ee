import Foundation
import LabCore
import QMP
import Testing

/// `qlab args` and `qlab diagnose` as a user runs them: the built binary.
@Suite("qlab args and qlab diagnose")
struct CommandLineCLITests {
    static var qlab: String { QLabTestEnvironment.qlabExecutable }

    /// Runs qlab with `stdin` fed from a file; returns status, stdout, stderr.
    static func run(_ arguments: [String], stdin: String? = nil, environment: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
        let dir = try LabTempDirectory("cli")
        defer { dir.remove() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: qlab)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let outFile = try dir.write("out", ""), errFile = try dir.write("err", "")
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outFile))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errFile))
        if let stdin { process.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: try dir.write("in", stdin))) }
        try process.run()
        process.waitUntilExit()
        return (process.terminationStatus, try String(contentsOfFile: outFile, encoding: .utf8), try String(contentsOfFile: errFile, encoding: .utf8))
    }

    @Test func argsPrintsWhatUpWouldRun() throws {
        let env = ["QLAB_RUNTIME_DIR": "/tmp/qlab cli,run", "QLAB_STATE_DIR": "/var/tmp/qlab-state"]
        let plain = try Self.run(["args", LabFixtures.emulatedLab], environment: env)
        #expect(plain.status == 0, "\(plain.err)")
        // Shell-quoted: the runtime path's space and comma survive a shell, the comma doubled for QEMU.
        #expect(plain.out.contains("'socket,id=qlab-qmp,path=/tmp/qlab cli,,run/emulated-scsi/qmp.sock,server=on,wait=off'"))
        #expect(plain.err.contains("# guest linux, accel "))
        let json = try Self.run(["args", LabFixtures.emulatedLab, "--json"], environment: env)
        let argv = try #require(try JSONValue.parse(json.out).arrayValue?.compactMap(\.stringValue))
        let lab = try Lab.load(path: LabFixtures.emulatedLab)
        let guest = try lab.selectGuest(nil)
        var layout = QEMURuntime.standard(
            lab: lab, guest: guest, runtimeDirectory: "/tmp/qlab cli,run", stateDirectory: "/var/tmp/qlab-state",
            accel: AccelDecision.decide(lab.machineSettings(for: guest).accel))
        // Guest RAM in a file when the revert method is fast (docs/devices-snapshots.md).
        let planner = LabPlanner(runtimeRoot: "/tmp/qlab cli,run", stateRoot: "/var/tmp/qlab-state", environment: ProcessInfo.processInfo.environment.merging(env) { $1 })
        layout.ramFile = planner.revertDecision(lab: lab, guest: guest, memory: lab.machineSettings(for: guest).memory).liveFile
        let expected = try QEMUCommandLine.build(lab: lab, guest: nil, runtime: layout)
        #expect(argv == expected.argv)
        // The printed line is the same argv once a shell has read it.
        let reread = try LabFixtures.run(["sh", "-c", "printf '%s\\0' " + plain.out.trimmingCharacters(in: .newlines)])
        #expect(reread.output.split(separator: "\0").map(String.init) == expected.argv)

        let netbsd = try Self.run(["args", LabFixtures.benchLab, "--guest", "netbsd", "--json"], environment: env)
        let netbsdArgv = try #require(try JSONValue.parse(netbsd.out).arrayValue?.compactMap(\.stringValue))
        #expect(netbsdArgv.contains("vfio-pci,id=scsi0,host=0000:03:05.0,bus=qlab-pcibr0,addr=0x1,rombar=0"))
        #expect(netbsd.err.contains("guests.netbsd.disk"))  // the image is not there: a warning, not an error
    }

    @Test func argsRejectsBadInputWithExitTwo() throws {
        let dir = try LabTempDirectory("cli-bad")
        defer { dir.remove() }
        let bad = try dir.write("bad.yaml", "name: t\ndevices:\n  scsi0:\n    passthrough: {host: \"0000:03:05.0\"}\n    atach: boot\nguests: {g: {os: linux, kernel: k}}\n")
        let result = try Self.run(["args", bad])
        #expect(result.status == 2)
        #expect(result.out.isEmpty)
        #expect(result.err.trimmingCharacters(in: .newlines) == "\(bad):5:5: devices.scsi0.atach: unknown key 'atach'; did you mean 'attach'?")
        let guest = try Self.run(["args", LabFixtures.emulatedLab, "--guest", "linus"])
        #expect(guest.status == 2)
        #expect(guest.err.contains("did you mean 'linux'?"))
        #expect(try Self.run(["args", dir.path + "/none.yaml"]).status == 2)
    }

    @Test func diagnoseReadsStdinAndFiles() throws {
        let text = """
            qemu-system-x86_64: -device vfio-pci,host=0000:03:05.0,id=scsi0: vfio 0000:03:05.0: Failed to set up TRIGGER eventfd signaling for interrupt INTX-0: VFIO_DEVICE_SET_IRQS failure: Device or resource busy
            genirq: Flags mismatch irq 17. 00000000 (vfio-intx(0000:03:05.0)) vs. 00000080 (ehci_hcd:usb1)
            Could not access KVM kernel module: No such file or directory
            """
        let json = try Self.run(["diagnose", "--json"], stdin: text)
        #expect(json.status == 0)
        let value = try JSONValue.parse(json.out)
        #expect(value == Diagnosis.json(Diagnoser.diagnose(text)))
        #expect(value["diagnoses"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == ["vfio-intx-busy", "kvm-unavailable"])

        let dir = try LabTempDirectory("cli-diag")
        defer { dir.remove() }
        let readable = try Self.run(["diagnose", try dir.write("qemu.log", text)])
        #expect(readable.out.hasPrefix("vfio-intx-busy [0000:03:05.0]: "))
        #expect(readable.out.contains("  fix:   Move the card to another slot"))
        let nothing = try Self.run(["diagnose", "-"], stdin: "all fine\n")
        #expect(nothing.out == "No known problem recognised.\n")
        #expect(try Self.run(["diagnose", dir.path + "/missing.log"]).status == 2)
        let list = try Self.run(["diagnose", "--list"])
        #expect(list.out.split(separator: "\n").count == DiagnosisCatalog.rules.count)
    }

    /// A usage error shows the usage of the command that was given (not qlab's list of
    /// commands), exits 2, and names the flag that was probably meant.
    @Test func usageErrorsShowTheCommandsUsage() throws {
        let shard = try Self.run(["run", "x.yaml", "--shard", "4/3"])
        #expect(shard.status == ExitStatus.usage.rawValue)
        #expect(shard.err.contains("'4/3'") && shard.err.contains("Usage: qlab run "), "\(shard.err)")
        let transport = try Self.run(["exec", "lab", "--transport", "ssh", "--", "true"])
        #expect(transport.status == ExitStatus.usage.rawValue)
        #expect(transport.err.contains("'ssh'") && transport.err.contains("'agent'") && transport.err.contains("Usage: qlab exec "), "\(transport.err)")
        let noCommand = try Self.run(["exec", "lab"])
        #expect(noCommand.status == ExitStatus.usage.rawValue)
        #expect(noCommand.err.contains("no command") && noCommand.err.contains("Usage: qlab exec "), "\(noCommand.err)")
        let qmp = try Self.run(["qmp", "--socket", "/nonexistent/qmp.sock", "device_del", "{\"id\": "])
        #expect(qmp.status == ExitStatus.usage.rawValue)
        #expect(qmp.err.contains("not valid JSON") && qmp.err.contains("Usage: qlab qmp "), "\(qmp.err)")
        let timeout = try Self.run(["screen", "lab", "--timeout", "inf"])
        #expect(timeout.status == ExitStatus.usage.rawValue)
        #expect(timeout.err.contains("--timeout") && timeout.err.contains("Usage: qlab screen "), "\(timeout.err)")
        let doctor = try Self.run(["doctor", "--device", "bogus"])
        #expect(doctor.status == ExitStatus.usage.rawValue, "docs/doctor.md: 2 for bad arguments")
        #expect(doctor.err.contains("Usage: qlab doctor "), "\(doctor.err)")
        let json = try Self.run(["run", "x.yaml", "--json", "out.json"])
        #expect(json.status == ExitStatus.usage.rawValue)
        #expect(json.err.contains("did you mean --json-report out.json?"), "\(json.err)")
        // Completion lists an enum option's values.
        let completion = try Self.run(["--generate-completion-script", "bash"])
        #expect(completion.out.contains("'agent'") && completion.out.contains("'console'"), "--via's values in bash completion")
        #expect(completion.out.contains("'critical'"), "--log-level's values in bash completion")
    }

    /// `--trace-qmp`, `--log-level` and `-v` are one option group of every command that runs
    /// (the parents only list subcommands), so none can forget them.
    @Test func everyCommandTakesTheGlobalOptions() throws {
        let dump = try Self.run(["--experimental-dump-help"])
        #expect(dump.status == 0, "\(dump.err)")
        var leaves: [String] = []
        func visit(_ command: JSONValue, path: String) {
            let name = path + " " + (command["commandName"]?.stringValue ?? "")
            let subcommands = command["subcommands"]?.arrayValue ?? []
            // ArgumentParser's own `help` command is the one exception.
            if subcommands.isEmpty && name != " qlab help" {
                leaves.append(name)
                let names = Set((command["arguments"]?.arrayValue ?? []).flatMap { ($0["names"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue } })
                #expect(names.isSuperset(of: ["trace-qmp", "log-level", "verbose", "v"]), "qlab\(name) lacks a global option: \(names.sorted())")
            }
            for sub in subcommands { visit(sub, path: name) }
        }
        visit(try JSONValue.parse(Array(dump.out.utf8))["command"] ?? .null, path: "")
        #expect(leaves.count > 25, "\(leaves)")
    }

    /// `--wait [DURATION]` is one option group (`WaitOptions`): every command that has a
    /// `--wait <DURATION>` has the same help text, and a bare `--wait` of each is read as
    /// "no limit" (the rewrite is derived from the group, not from a list of names); another
    /// command's `--wait` (`screen --wait TEXT`) is left alone.
    @Test func everyWaitDurationIsOneOptionThatMayBeBare() throws {
        let dump = try Self.run(["--experimental-dump-help"])
        #expect(dump.status == 0, "\(dump.err)")
        var waits: [(command: String, valueName: String, help: String)] = []
        func visit(_ command: JSONValue, path: [String]) {
            let name = path + [command["commandName"]?.stringValue ?? ""]
            for argument in command["arguments"]?.arrayValue ?? []
            where (argument["names"]?.arrayValue ?? []).contains(where: { $0["name"]?.stringValue == "wait" }) {
                waits.append((name.dropFirst().joined(separator: " "), argument["valueName"]?.stringValue ?? "", argument["abstract"]?.stringValue ?? ""))
            }
            for sub in command["subcommands"]?.arrayValue ?? [] { visit(sub, path: name) }
        }
        visit(try JSONValue.parse(Array(dump.out.utf8))["command"] ?? .null, path: [])
        let durations = waits.filter { $0.valueName == "DURATION" }
        #expect(Set(durations.map(\.command)).isSuperset(of: ["run", "up", "health"]), "\(waits)")
        #expect(Set(durations.map(\.help)).count == 1, "one help text for --wait DURATION: \(durations)")
        for wait in durations {
            // A bare --wait, then no lab: the complaint is the missing lab, not --wait's value.
            let bare = try Self.run(wait.command.split(separator: " ").map(String.init) + ["--wait"])
            #expect(bare.status == ExitStatus.usage.rawValue, "qlab \(wait.command) --wait: \(bare.err)")
            #expect(!bare.err.contains("value for '--wait"), "qlab \(wait.command) --wait was not read as no limit: \(bare.err)")
            #expect(bare.err.contains("<lab>"), "qlab \(wait.command) --wait: \(bare.err)")
        }
        let others = waits.filter { $0.valueName != "DURATION" }
        #expect(others.map(\.command).contains("screen"), "\(waits)")
        for wait in others {
            let bare = try Self.run(wait.command.split(separator: " ").map(String.init) + ["lab", "--wait"])
            #expect(bare.status == ExitStatus.usage.rawValue && bare.err.contains("value for '--wait"), "qlab \(wait.command) lab --wait: \(bare.err)")
        }
    }
}
