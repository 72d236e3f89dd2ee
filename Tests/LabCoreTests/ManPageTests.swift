import Foundation
import Testing

/// scripts/man-pages finishes argument-parser's pages (no page or SEE ALSO entry for
/// the hidden `_supervise`, no empty input line mdoc warns about) and adds qlab-lab(5).
@Suite("Man pages")
struct ManPageTests {
    static let root = QLabTestEnvironment.repositoryRoot

    /// `man --warnings -l PAGE`'s warnings (its stderr); the page is rendered, not shown.
    static func warnings(_ page: String) throws -> String {
        let (status, output) = try LabFixtures.run(["/bin/sh", "-c", "man --warnings -l -Tutf8 '\(page)' 2>&1 >/dev/null"])
        #expect(status == 0, "\(output)")
        return output
    }

    static func finish(_ directory: String) throws {
        let (status, output) = try LabFixtures.run([root + "/scripts/man-pages", directory])
        #expect(status == 0, "\(output)")
    }

    /// The generator's output as the plugin writes it (from the qlab built for the
    /// tests, where the plugin's tool was built), else a page shaped like its qlab.1.
    @Test func pagesHaveNoSuperviseAndNoWarnings() throws {
        let dir = try LabTempDirectory()
        defer { dir.remove() }
        let tool = URL(fileURLWithPath: QLabTestEnvironment.qlabExecutable).deletingLastPathComponent().appendingPathComponent("generate-manual-tool").path
        if FileManager.default.isExecutableFile(atPath: tool) {
            let (status, output) = try LabFixtures.run([tool, QLabTestEnvironment.qlabExecutable, "--multi-page", "-o", dir.path])
            #expect(status == 0, "\(output)")
        } else {
            _ = try dir.write("qlab.1", ".Dd December 7, 2026\n.Dt QLAB 1\n.Os\n.Sh NAME\n.Nm qlab\n.Nd \"x\"\n.Sh DESCRIPTION\nExit codes:\n  0  success\n\nEvery command.\n.Sh \"SEE ALSO\"\n.Xr qlab._supervise 1 ,\n.Xr qlab.args 1\n")
            _ = try dir.write("qlab._supervise.1", ".Dd December 7, 2026\n.Dt QLAB._SUPERVISE 1\n.Os\n")
        }
        #expect(try Self.warnings(dir.path + "/qlab.1").contains("Empty input line"), "the check below can fail: the generator's page warns")
        try Self.finish(dir.path)
        let pages = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(!pages.contains("qlab._supervise.1"), "\(pages)")
        #expect(pages.contains("qlab-lab.5"), "\(pages)")
        for page in pages {
            let text = try String(contentsOfFile: dir.path + "/" + page, encoding: .utf8)
            #expect(!text.contains("_supervise"), "\(page) names the hidden supervisor command")
            #expect(try Self.warnings(dir.path + "/" + page).isEmpty, "\(page)")
        }
    }
}
