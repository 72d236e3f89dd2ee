import ArgumentParser
import LabCore
import QMP

#if canImport(Glibc)
import Glibc
#endif

/// `qlab args LAB [--guest G]`: the QEMU command line `qlab up` would run.
struct ArgsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "args",
        abstract: "Print the QEMU command line that `qlab up` would run, shell-quoted.",
        discussion: "Files the lab names that do not exist yet are reported on stderr; the command line is printed anyway."
    )

    @Argument(help: "The lab file.")
    var lab: String

    @Option(help: "The guest to boot (default: the lab's first guest).")
    var guest: String?

    @Flag(help: "One option per line, with backslash continuations.")
    var multiline = false

    @Flag(help: "Print the argv as a JSON array instead.")
    var json = false

    func run() throws {
        let lab: Lab
        do {
            lab = try Lab.load(path: self.lab)
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        do {
            let guest = try lab.selectGuest(guest)
            for missing in lab.missingFiles where missing.guest == nil || missing.guest == guest.name {
                printError("warning: " + missing.error.description)
            }
            let environment = currentEnvironment()
            let accel = AccelDecision.decide(lab.machineSettings(for: guest).accel)
            var runtime = QEMURuntime.standard(
                lab: lab, guest: guest,
                runtimeDirectory: LabDirectories.runtimeRoot(environment: environment, uid: getuid()),
                stateDirectory: LabDirectories.stateRoot(environment: environment), accel: accel)
            if lab.devices.contains(where: { $0.passthrough?.rombar != nil }) {
                runtime.rombar = RombarSpelling.probe(qemu: lab.qemu)
            }
            let commandLine = try QEMUCommandLine.build(lab: lab, guest: guest.name, runtime: runtime)
            printError("# guest \(guest.name), accel \(accel)")
            if json {
                print(try JSONValue.array(commandLine.argv.map { .string($0) }).jsonString(pretty: false))
            } else {
                print(commandLine.shellQuoted(multiline: multiline))
            }
        } catch let error as LabFileError {
            printError(error.description)
            throw ExitCode(2)
        } catch let error as QEMUCommandLineError {
            printError(error.description)
            throw ExitCode(2)
        } catch let error as JSONEncodeError {
            printError("cannot encode the command line as JSON: \(error)")
            throw ExitCode(1)
        }
    }
}

fileprivate func printError(_ message: String) {
    var line = message
    if !line.hasSuffix("\n") { line += "\n" }
    var bytes = Array(line.utf8)[...]
    while !bytes.isEmpty {
        let n = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        bytes = bytes.dropFirst(n)
    }
}
