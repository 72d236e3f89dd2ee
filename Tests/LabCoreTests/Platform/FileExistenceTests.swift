import Foundation
import LabCore
import Platform
import Testing

/// The one file-existence helper pair: `exists` follows links (`stat(2)`),
/// `entryExists` asks about the name itself (`lstat(2)`).
@Suite("File existence helpers (issue 11)")
struct FileExistenceTests {
    @Test func danglingLinkIsAnEntryButDoesNotExist() throws {
        let dir = try LabTempDirectory("exists")
        defer { dir.remove() }
        let link = dir.path + "/dangling"
        try #require(symlink(dir.path + "/missing", link) == 0)
        #expect(FileSystem.entryExists(link))
        #expect(!FileSystem.exists(link))
        #expect(!FileSystem.isDirectory(link))
    }

    @Test func linkToAFileExistsBothWays() throws {
        let dir = try LabTempDirectory("exists")
        defer { dir.remove() }
        let target = try dir.write("target", "x")
        let link = dir.path + "/link"
        try #require(symlink(target, link) == 0)
        #expect(FileSystem.entryExists(link))
        #expect(FileSystem.exists(link))
        #expect(FileSystem.isDirectory(dir.path))
        #expect(!FileSystem.isDirectory(link))
    }

    @Test func missingPathIsNeither() throws {
        let dir = try LabTempDirectory("exists")
        defer { dir.remove() }
        #expect(!FileSystem.entryExists(dir.path + "/none"))
        #expect(!FileSystem.exists(dir.path + "/none"))
    }
}
