import Foundation
import LabCore
import Platform
import QMP
import Synchronization
import Testing

/// Every file qlab writes at a path the user gave goes through ``OutputFile``:
/// a regular file replaced atomically, a device or FIFO written as a stream and
/// never replaced, a directory or a link qlab does not follow refused. Shown
/// with `qlab report html -o` (the same writer serves run reports, `report merge`
/// and screenshots; ScreenTests writes a screenshot to a full device). No test
/// here touches the host's own /dev: the devices are private nodes made with
/// mknod(2) in the test's directory (root), the stream targets FIFOs it made.
@Suite("Output files: one policy for every path a user gives", .serialized)
struct OutputFileTests {
    final class Fixture {
        let env: QLabTestEnvironment
        let dir: String
        let report: String

        init() throws {
            env = try QLabTestEnvironment()
            dir = env.root + "/out"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            report = dir + "/r.json"
            try FileSystem.writeJSON(report, HTMLReportTests.nights(HTMLReportTests.story)[0].json)
        }

        func html(_ output: String) throws -> QLabTestEnvironment.Result {
            try env.qlab("report", "html", report, "-o", output)
        }

        deinit { env.cleanUp() }
    }

    static func lstatus(_ path: String) -> stat? {
        var info = stat()
        return lstat(path, &info) == 0 ? info : nil
    }

    static func format(_ path: String) -> mode_t? { lstatus(path).map { $0.st_mode & S_IFMT } }

    @Test func aRegularFileIsReplacedAtomicallyAndANewOneCreated() throws {
        let fixture = try Fixture()
        let path = fixture.dir + "/page.html"
        let first = try fixture.html(path)
        #expect(first.status == 0, "\(first.output)")
        let before = try #require(Self.lstatus(path))
        #expect(before.st_mode & S_IFMT == S_IFREG && before.st_mode & 0o777 == 0o644)
        let second = try fixture.html(path)
        #expect(second.status == 0, "\(second.output)")
        let after = try #require(Self.lstatus(path))
        // A new inode under the old name: renamed over, not rewritten in place.
        #expect(after.st_ino != before.st_ino)
        #expect(try String(contentsOfFile: path, encoding: .utf8).hasSuffix("</html>\n"))
        // Nothing else left beside it (no temporary file).
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.dir).sorted() == ["page.html", "r.json"])
    }

    /// A private character device standing for /dev/null (mknod c 1 3) stays a device.
    @Test func aDeviceIsWrittenToNeverReplaced() throws {
        let fixture = try Fixture()
        let null = fixture.dir + "/null"
        guard mknod(null, S_IFCHR | 0o666, dev_t(1 << 8 | 3)) == 0 else {
            // Not root: /dev/null itself cannot be replaced by this user, so the real one is safe to use.
            let result = try fixture.html("/dev/null")
            #expect(result.status == 0, "\(result.output)")
            #expect(Self.format("/dev/null") == S_IFCHR)
            return
        }
        let before = try #require(Self.lstatus(null))
        let result = try fixture.html(null)
        #expect(result.status == 0, "\(result.output)")
        let after = try #require(Self.lstatus(null))
        #expect(after.st_mode & S_IFMT == S_IFCHR && after.st_ino == before.st_ino && after.st_rdev == before.st_rdev)
    }

    /// A symbolic link to /dev/stdout (the caller's own link): the page goes to stdout, the link stays.
    @Test func aLinkToStandardOutputWritesToStandardOutput() throws {
        let fixture = try Fixture()
        let link = fixture.dir + "/stdout.html"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "/dev/stdout")
        let result = try fixture.html(link)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.hasPrefix("<!DOCTYPE html>") && result.stdout.hasSuffix("</html>\n"), "\(result.stdout.prefix(200))")
        #expect(Self.format(link) == S_IFLNK)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == "/dev/stdout")
    }

    /// A FIFO with a reader gets the page as a stream and stays a FIFO; one nobody reads is refused, not waited on.
    @Test func aFIFOIsAStream() throws {
        let fixture = try Fixture()
        let fifo = fixture.dir + "/pipe"
        try #require(mkfifo(fifo, 0o600) == 0)
        let unread = try fixture.html(fifo)
        #expect(unread.status == ExitStatus.usage.rawValue, "\(unread.output)")
        #expect(unread.stderr.contains("cannot write \(fifo): a FIFO that nobody reads: start the reader first"), "\(unread.stderr)")
        #expect(Self.format(fifo) == S_IFIFO)

        // The reader is there before qlab opens the FIFO: O_RDWR opens at once (Linux) and holds it open.
        let reader = open(fifo, O_RDWR | O_CLOEXEC)
        try #require(reader >= 0)
        defer { close(reader) }
        let received = Mutex<[UInt8]>([])
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            // Reads until the page's end; each poll has a bound, so a page that never comes ends the thread.
            let deadline = Date().addingTimeInterval(120)
            while Date() < deadline, !received.withLock({ $0.suffix(8).elementsEqual("</html>\n".utf8) }) {
                var descriptor = pollfd(fd: reader, events: Int16(POLLIN), revents: 0)
                guard poll(&descriptor, 1, 1000) > 0 else { continue }
                let count = buffer.withUnsafeMutableBytes { read(reader, $0.baseAddress, $0.count) }
                if count <= 0 { break }
                received.withLock { $0 += buffer[..<count] }
            }
            done.signal()
        }
        let result = try fixture.html(fifo)
        #expect(result.status == 0, "\(result.output)")
        #expect(done.wait(timeout: .now() + 120) == .success, "the reader got the page's end")
        let page = String(decoding: received.withLock { $0 }, as: UTF8.self)
        #expect(page.hasPrefix("<!DOCTYPE html>"), "\(page.prefix(200))")
        #expect(Self.format(fifo) == S_IFIFO)
    }

    @Test func aDirectoryIsRefused() throws {
        let fixture = try Fixture()
        let result = try fixture.html(fixture.dir)
        #expect(result.status == ExitStatus.usage.rawValue, "\(result.output)")
        #expect(result.stderr.contains("cannot write \(fixture.dir): a directory: give a file name"), "\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.dir) == ["r.json"])
    }

    /// A dangling link: nothing is created through it, the link stays as it was.
    @Test func aDanglingLinkIsRefused() throws {
        let fixture = try Fixture()
        let link = fixture.dir + "/dangling.html"
        let target = fixture.dir + "/elsewhere.html"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        let result = try fixture.html(link)
        #expect(result.status == ExitStatus.usage.rawValue, "\(result.output)")
        #expect(result.stderr.contains("a dangling symbolic link to \(target)"), "\(result.stderr)")
        #expect(Self.format(target) == nil)
        #expect(Self.format(link) == S_IFLNK)
    }

    /// A link another user made (uid 65534) is not followed, even to a file the caller could write.
    @Test func aLinkAnotherUserOwnsIsRefused() throws {
        let fixture = try Fixture()
        let target = fixture.dir + "/victim.txt"
        try "keep\n".write(toFile: target, atomically: false, encoding: .utf8)
        let link = fixture.dir + "/planted.html"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        guard lchown(link, 65534, 65534) == 0 else { return }  // not root: no other user's link to make
        let result = try fixture.html(link)
        #expect(result.status == ExitStatus.usage.rawValue, "\(result.output)")
        #expect(result.stderr.contains("a symbolic link owned by uid 65534"), "\(result.stderr)")
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "keep\n")
    }

    /// The caller's own link to a regular file: the file is replaced in its own directory, the link stays a link.
    @Test func theCallersLinkToAFileReplacesTheFile() throws {
        let fixture = try Fixture()
        let nights = fixture.dir + "/nights"
        try FileManager.default.createDirectory(atPath: nights, withIntermediateDirectories: true)
        let target = nights + "/42.html"
        try "old\n".write(toFile: target, atomically: false, encoding: .utf8)
        let link = fixture.dir + "/latest.html"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "nights/42.html")
        let result = try fixture.html(link)
        #expect(result.status == 0, "\(result.output)")
        #expect(Self.format(link) == S_IFLNK)
        #expect(try String(contentsOfFile: target, encoding: .utf8).hasPrefix("<!DOCTYPE html>"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: nights) == ["42.html"])
    }

    /// A link (root's, so followed) into a directory the caller cannot write: refused, the
    /// file there untouched. Run as uid 65534 with setpriv(1); root can write anywhere.
    @Test func aLinkIntoADirectoryTheCallerCannotWriteIsRefused() throws {
        guard geteuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else { return }
        let dir = try LabTempDirectory("nobody")
        defer { dir.remove() }
        try #require(chmod(dir.path, 0o755) == 0)
        let report = try dir.write("r.json", #"{"lab": "x", "results": []}"#)
        try #require(chmod(report, 0o644) == 0)
        try FileManager.default.createDirectory(atPath: dir.path + "/locked", withIntermediateDirectories: false)
        let target = try dir.write("locked/page.html", "old\n")
        try #require(chmod(target, 0o644) == 0)
        let link = dir.path + "/latest.html"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "locked/page.html")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", QLabTestEnvironment.qlabExecutable, "report", "html", report, "-o", link]
        let errors = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        let err = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let result = (status: process.terminationStatus, err: err)
        #expect(result.status == ExitStatus.usage.rawValue, "\(result.err)")
        #expect(result.err.contains("cannot write \(link): cannot write in \(dir.path)/locked (where the link points): Permission denied"), "\(result.err)")
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "old\n")
    }

    /// The policy itself, without a command: what each kind of path becomes.
    @Test func targetsOfEachKind() throws {
        let fixture = try Fixture()
        let dir = fixture.dir
        #expect(try OutputFile.target(dir + "/new.json") == .replace(dir + "/new.json"))
        #expect(try OutputFile.target(fixture.report) == .replace(fixture.report))
        #expect(throws: OutputFileError.self) { try OutputFile.target(dir + "/no/such/dir/file.json") }
        #expect(throws: OutputFileError.self) { try OutputFile.target("") }
        do {
            _ = try OutputFile.target(dir + "/no/such/dir/file.json")
        } catch {
            #expect(error.refused && error.description.contains("its directory \(dir)/no/such/dir does not exist"), "\(error)")
            #expect(error.exitStatus == .usage)
        }
        try FileManager.default.createSymbolicLink(atPath: dir + "/to-dir", withDestinationPath: dir)
        #expect(throws: OutputFileError.refused(dir + "/to-dir", "a symbolic link to a directory: give a file name")) {
            try OutputFile.target(dir + "/to-dir")
        }
        try #require(mkfifo(dir + "/fifo", 0o600) == 0)
        #expect(try OutputFile.target(dir + "/fifo") == .stream(dir + "/fifo", what: "a FIFO"))
    }
}
