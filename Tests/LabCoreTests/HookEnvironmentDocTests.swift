import Foundation
import Testing

/// The example labs use only hook variables that the lab format documents.
@Suite("Hook environment docs")
struct HookEnvironmentDocTests {
    static func variables(in text: String) -> Set<String> {
        let regex = try! NSRegularExpression(pattern: "QLAB_[A-Z_]+")
        let range = NSRange(text.startIndex..., in: text)
        return Set(regex.matches(in: text, range: range).compactMap { Range($0.range, in: text).map { String(text[$0]) } })
    }

    @Test func exampleLabsUseDocumentedVariables() throws {
        let root = LabFixtures.repositoryRoot
        let doc = try String(contentsOfFile: root + "/docs/lab-format.md", encoding: .utf8)
        let table = doc.split(separator: "\n").filter { $0.contains("| `QLAB_") }.joined(separator: "\n")
        let documented = Self.variables(in: table)
        #expect(documented.contains("QLAB_PASSTHROUGH"))
        #expect(!documented.contains("QLAB_DEVICE_"))
        for file in try FileManager.default.contentsOfDirectory(atPath: root + "/labs") where file.hasSuffix(".yaml") {
            let text = try String(contentsOfFile: root + "/labs/" + file, encoding: .utf8)
            for name in Self.variables(in: text) {
                #expect(documented.contains(name), "labs/\(file) uses \(name), which docs/lab-format.md does not list")
            }
        }
    }
}
