import Foundation
import LabCore
import Testing

/// docs/lab-format.md's "What qlab generates" is what `qlab args --multiline`
/// prints for labs/emulated-scsi.yaml, with the roots written as placeholders.
@Suite("Lab format doc")
struct LabFormatDocTests {
    @Test func whatQlabGeneratesIsWhatArgsPrints() throws {
        let env = try QLabTestEnvironment()
        defer { env.cleanUp() }
        let root = QLabTestEnvironment.repositoryRoot
        let args = try env.qlab("args", root + "/labs/emulated-scsi.yaml", "--multiline")
        #expect(args.status == 0, "\(args.output)")
        let runtime = env.runtime("emulated-scsi")
        let generated = args.stdout
            .replacingOccurrences(of: runtime.ramRoot, with: "$RAMDIR")
            .replacingOccurrences(of: env.runtimeRoot, with: "$RUNTIME")
            .replacingOccurrences(of: env.stateRoot, with: "$STATE")
            .replacingOccurrences(of: root + "/", with: ".../")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let doc = try String(contentsOfFile: root + "/docs/lab-format.md", encoding: .utf8)
        let section = try #require(doc.range(of: "## What qlab generates"), "the section is gone")
        let rest = doc[section.upperBound...]
        let open = try #require(rest.range(of: "```\n"))
        let close = try #require(rest[open.upperBound...].range(of: "\n```"))
        let documented = String(rest[open.upperBound..<close.lowerBound])
        #expect(documented == generated, "docs/lab-format.md differs from qlab args:\n\(generated)")
        #expect(documented.contains("memory-backend-file"), "the check above can fail: the doc shows the RAM backend")
    }
}
