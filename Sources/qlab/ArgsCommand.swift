import ArgumentParser
import LabCore
import QMP


/// `qlab args LAB [--guest G]`: the QEMU command line `qlab up` would run.
struct ArgsCommand: ParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "args",
        abstract: "Print the QEMU command line that `qlab up` would run, shell-quoted.",
        discussion: "Files the lab names that do not exist yet are reported on stderr; the command line is printed anyway."
    )

    @Argument(help: "The lab file, or the name of a lab started before (its last lab file).", completion: Completions.lab)
    var lab: String

    @Option(help: "The guest to boot (default: the lab's first guest).")
    var guest: String?

    @Flag(help: "One option per line, with backslash continuations.")
    var multiline = false

    @Flag(help: "Print the argv as a JSON array instead.")
    var json = false

    func run() throws {
        do {
            let lab = try Lab.load(path: try LabRuntime.labFile(for: self.lab))
            let guest = try lab.selectGuest(guest)
            for missing in lab.missingFiles where missing.guest == nil || missing.guest == guest.name {
                reportError("warning: " + missing.error.description)
            }
            // The same planner as `up`: what is printed is what `up` runs.
            let plan = try LabPlanner().plan(lab: lab, guest: guest.name)
            let (commandLine, accel) = (plan.commandLine, plan.accel)
            reportError("# guest \(guest.name), accel \(accel)")
            if json {
                try printJSONLine(.array(commandLine.argv.map { .string($0) }))
            } else {
                print(commandLine.shellQuoted(multiline: multiline))
            }
        } catch {
            // The error alone: a lab file's `FILE:LINE:COL: ...` starts the line, as editors expect.
            reportError("\(error)")
            throw Reported(ExitStatus(for: error))
        }
    }
}
