import Foundation
import LabCore
import Testing

/// docs/guests.md and the OS profiles say the same thing: each OS's block of
/// `console:`, `rescan:`, `scsi disks:` and `notes:` lines is the profile's, word for word.
@Suite("Guest recipes agree with the OS profiles")
struct GuestDocsTests {
    /// The OSes docs/guests.md has recipes for.
    static let documented: [GuestOS] = [.linux, .freebsd, .netbsd, .openbsd, .macos, .dos, .grub]

    /// The ```text blocks that start with `os: NAME`, as key -> value per OS.
    static func blocks() throws -> [String: [String: String]] {
        let text = try String(contentsOfFile: QLabTestEnvironment.repositoryRoot + "/docs/guests.md", encoding: .utf8)
        var result: [String: [String: String]] = [:]
        for block in text.components(separatedBy: "```text\n").dropFirst() {
            guard let end = block.range(of: "\n```") else { continue }
            var fields: [String: String] = [:]
            for line in block[..<end.lowerBound].split(separator: "\n") {
                guard let colon = line.range(of: ": ") else { continue }
                fields[String(line[..<colon.lowerBound])] = String(line[colon.upperBound...])
            }
            if let os = fields["os"] { result[os] = fields }
        }
        return result
    }

    @Test(arguments: documented)
    func docLinesAreTheProfiles(_ os: GuestOS) throws {
        let blocks = try Self.blocks()
        let block = try #require(blocks[os.rawValue], "docs/guests.md has no ```text block with os: \(os.rawValue)")
        let profile = OSProfile.profile(for: os)
        #expect(block["console"] == profile.consoleRecipe)
        #expect(block["rescan"] == (profile.rescanCommand ?? "none"))
        #expect(block["scsi disks"] == (profile.listSCSIDisksCommand ?? "none"))
        #expect(block["notes"] == profile.notes)
    }

    /// Every documented OS has a block, and nothing else claims to be one.
    @Test func everyOSHasItsBlock() throws {
        #expect(Set(try Self.blocks().keys) == Set(Self.documented.map(\.rawValue)))
    }
}
