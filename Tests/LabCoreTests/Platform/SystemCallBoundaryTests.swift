import Foundation
import Testing

/// System calls are made in Sources/Platform and nowhere else (issue 19):
/// outside it no file imports Glibc (or Darwin) and none calls the libc
/// functions Platform wraps. The goal is no exception; a file that must be
/// one says why on a `// Glibc: REASON` line, which this test requires.
@Suite("System calls only in Platform (source scan)")
struct SystemCallBoundaryTests {
    static let sources = LabFixtures.repositoryRoot + "/Sources"

    /// libc functions qlab wraps in Platform (names qlab never gives its own
    /// functions), and argument shapes that only the raw calls have.
    static let wrappedFunctions = [
        "fcntl", "waitpid", "pipe", "pipe2", "dup", "dup2", "openat", "unlinkat", "mkdirat", "renameat", "fstatat", "lstat", "fstat",
        "flock", "usleep", "nanosleep", "getpid", "getuid", "geteuid", "strerror", "sigaction", "setenv", "getenv", "isatty",
        "tcsetattr", "tcgetattr", "ioctl", "pread", "pwrite", "lseek", "ftruncate", "opendir", "readdir", "closedir", "fdopendir",
        "readlinkat", "posix_spawn", "posix_spawnp", "memchr", "memcmp", "gethostname", "getrlimit", "setvbuf", "inotify_init1",
        "inotify_add_watch", "clock_gettime", "gmtime_r", "strftime", "mkdtemp", "sendto", "recvfrom", "socketpair", "accept4",
    ]
    static let rawCall = try! NSRegularExpression(pattern: [
        #"(?<![\w.])("# + wrappedFunctions.joined(separator: "|") + #")\("#,
        #"(?<![\w.])(close|kill)\(\s*-?[A-Za-z_]"#,
        // read(2)/write(2) take three arguments: qlab's own `write(path, bytes)` is not one.
        #"(?<![\w.])(read|write)\(\s*[\w.]+\s*,\s*[&\w.$]+\s*,"#,
        #"(?<![\w.])poll\(\s*&"#,
        #"(?<![\w.])(open|stat)\(\s*[A-Za-z_][\w.]*\s*,\s*(O_|&)"#,
        #"\bGlibc\."#,
        #"\bEINTR\b"#,
    ].joined(separator: "|"))

    struct Finding: CustomStringConvertible {
        var file: String
        var line: Int
        var text: String
        var description: String { "\(file):\(line): \(text)" }
    }

    /// Every Swift file under Sources/ outside Sources/Platform, relative paths.
    static func swiftFilesOutsidePlatform() throws -> [String] {
        let enumerator = try #require(FileManager.default.enumerator(atPath: sources))
        return enumerator.compactMap { $0 as? String }
            .filter { $0.hasSuffix(".swift") && !$0.hasPrefix("Platform/") }
            .sorted()
    }

    /// The line without its comment and string literals (so doc comments
    /// naming `close(2)` and messages quoting a call do not count).
    static func code(_ line: String) -> String {
        var result = ""
        var inString = false
        var previous: Character = " "
        var iterator = line.makeIterator()
        while let character = iterator.next() {
            if !inString && character == "/" && previous == "/" {
                result.removeLast()
                break
            }
            if character == "\"" && previous != "\\" { inString.toggle(); previous = character; continue }
            if !inString { result.append(character) }
            previous = character
        }
        return result
    }

    static func exceptionReason(_ text: String) -> String? {
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("// Glibc:") {
                let reason = trimmed.dropFirst("// Glibc:".count).trimmingCharacters(in: .whitespaces)
                return reason.count >= 20 ? reason : nil
            }
        }
        return nil
    }

    static func scan() throws -> (imports: [String], calls: [Finding], exceptions: [String: String]) {
        var imports: [String] = []
        var calls: [Finding] = []
        var exceptions: [String: String] = [:]
        for file in try swiftFilesOutsidePlatform() {
            let text = try String(contentsOfFile: sources + "/" + file, encoding: .utf8)
            if let reason = exceptionReason(text) { exceptions[file] = reason }
            for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if ["import Glibc", "@preconcurrency import Glibc", "import Darwin", "import SwiftGlibc"].contains(trimmed) {
                    imports.append(file)
                    continue
                }
                let code = Self.code(String(line))
                if rawCall.firstMatch(in: code, range: NSRange(code.startIndex..., in: code)) != nil {
                    calls.append(Finding(file: file, line: index + 1, text: trimmed))
                }
            }
        }
        return (imports, calls, exceptions)
    }

    @Test func noFileOutsidePlatformImportsGlibcWithoutSayingWhy() throws {
        let (imports, _, exceptions) = try Self.scan()
        let unexplained = imports.filter { exceptions[$0] == nil }
        #expect(unexplained.isEmpty, "these import Glibc outside Sources/Platform with no `// Glibc: REASON` line; add a Platform wrapper instead: \(unexplained)")
    }

    @Test func noRawSystemCallOutsidePlatformWithoutSayingWhy() throws {
        let (_, calls, exceptions) = try Self.scan()
        let unexplained = calls.filter { exceptions[$0.file] == nil }
        #expect(unexplained.isEmpty, "raw system calls outside Sources/Platform (use or add a Platform wrapper): \(unexplained.map(\.description).joined(separator: "\n"))")
    }

    /// An exception that no longer imports Glibc nor makes a raw call is stale: its comment must go.
    @Test func everyExceptionIsStillNeeded() throws {
        let (imports, calls, exceptions) = try Self.scan()
        let needed = Set(imports).union(calls.map(\.file))
        let stale = exceptions.keys.filter { !needed.contains($0) }.sorted()
        #expect(stale.isEmpty, "these say `// Glibc:` but make no system call: \(stale)")
    }

    /// The scanner itself: it finds what it is meant to find and passes what it is not.
    @Test func scannerSeesRawCallsNotCommentsOrMethods() {
        func flagged(_ line: String) -> Bool {
            let code = Self.code(line)
            return Self.rawCall.firstMatch(in: code, range: NSRange(code.startIndex..., in: code)) != nil
        }
        #expect(flagged("        defer { close(fd) }"))
        #expect(flagged("        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)"))
        #expect(flagged("            let n = read(fd, &byte, 1)"))
        #expect(flagged("        kill(pid, SIGKILL)"))
        #expect(flagged("        if errno == EINTR { continue }"))
        #expect(flagged("        Glibc.exit(2)"))
        #expect(!flagged("        client.close()"))
        #expect(!flagged("        close()"))
        #expect(!flagged("    /// `close(2)` of the pipe's write end; `waitpid(2)` after it"))
        #expect(!flagged("        reportError(\"cannot fcntl(fd) here\")"))
        #expect(!flagged("        fd.closeIgnoringErrors()"))
        #expect(!flagged("        running.kill()"))
        #expect(!flagged("        var raw = read(path, from: start, limit: size - start) ?? []"))
        #expect(!flagged("            try write(path, bytes)"))
    }
}
