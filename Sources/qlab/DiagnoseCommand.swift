import ArgumentParser
import LabCore

import Platform
import QMP

/// `qlab diagnose [FILE|-] [--json]`: explain QEMU and kernel error text.
struct DiagnoseCommand: ParsableCommand, JSONReporting, UsesGlobalOptions {
    @OptionGroup(title: "Global options") var global: GlobalOptions
    static let configuration = CommandConfiguration(
        commandName: "diagnose",
        abstract: "Explain QEMU and kernel error text (a log file, dmesg, or stdin): each recognised problem with its cause and fix."
    )

    @Argument(help: "A file with QEMU's stderr or kernel messages; `-` or nothing reads stdin.")
    var file: String = "-"

    @Flag(help: "Print {\"diagnoses\":[{\"id\",\"device\",\"summary\",\"cause\",\"fix\"}]}.")
    var json = false

    @Flag(help: "List the problems qlab recognises (the catalog) instead.")
    var list = false

    func run() throws {
        if list {
            if json {
                return try printJSON(["rules": .array(DiagnosisCatalog.rules.map { ["id": .string($0.id), "summary": .string($0.explain([:]).summary)] })])
            }
            for rule in DiagnosisCatalog.rules {
                print(rule.id.padding(28) + rule.explain([:]).summary)
            }
            return
        }
        let fd: FileDescriptor
        do { fd = file == "-" ? .standardInput : try FileDescriptor.open(file, .readOnly, options: .closeOnExec) } catch {
            reportError("qlab diagnose: cannot read \(file): \(SystemCallError("", thrown: error).code)")
            throw Reported(.usage)
        }
        defer { if fd != .standardInput { fd.closeIgnoringErrors() } }
        guard let bytes = fd.readAll(limit: 256 << 20) else {
            reportError("qlab diagnose: cannot read \(file): \(Errno.current)")
            throw Reported(.usage)
        }
        let diagnoses = Diagnoser.diagnose(String(decoding: bytes, as: UTF8.self))
        if json {
            return try printJSON(Diagnosis.json(diagnoses))
        }
        if diagnoses.isEmpty {
            print("No known problem recognised.")
            return
        }
        print(diagnoses.map(\.text).joined(separator: "\n\n"))
    }
}

extension String {
    fileprivate func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }
}
