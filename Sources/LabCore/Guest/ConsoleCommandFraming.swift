/// How a command is typed on a serial console so that its output and exit
/// status can be told apart from everything else the console carries.
///
/// The line sent is
///
///     printf '%s%s\n' '__QLAB_B' 'EGIN_N__'; (eval 'COMMAND') </dev/null; printf '\n%s%s=%d\n' '__QLAB_E' 'ND_N__' $?
///
/// with a fresh nonce N per call. The markers are printed from split
/// strings, so a console that echoes the typed line never shows them whole;
/// a stale marker of an earlier (interrupted) call has another nonce. The
/// command runs in a subshell (an `exit` or `cd` in it leaves the console
/// shell as it was) with standard input from /dev/null (it cannot swallow
/// what is typed next). The end marker starts on a line of its own, so
/// output without a final line end stays exact: one `\n` before the marker
/// is qlab's.
///
/// The console shell must be a POSIX shell (sh, ash, dash, ksh, bash), or
/// GRUB's shell (``ConsoleShell/grub``), where the line is
///
///     echo "__QLAB_B""EGIN_N__"; eval 'COMMAND'; qlab_status=$?; echo; echo "__QLAB_E""ND_N__=$qlab_status"
///
/// GRUB has no subshell and no files to write a long command to: a GRUB
/// command is one line. GRUB's normal mode reports some failures (a command
/// it does not know, a disk the BIOS does not have) as an `error: ...` line
/// and leaves `$?` at 0; qlab then reports exit status 1 (``grubFailedStatus``),
/// so such a failure never reads as success.
struct ConsoleCommandFraming: Sendable {
    let nonce: String
    let shell: ConsoleShell

    init(nonce: String = ConsoleCommandFraming.makeNonce(), shell: ConsoleShell = .posix) {
        self.nonce = nonce
        self.shell = shell
    }

    /// The status reported for a GRUB command whose `$?` is 0 but which printed `error: ...`.
    static let grubFailedStatus: Int32 = 1

    static func makeNonce() -> String {
        var generator = SystemRandomNumberGenerator()
        let value = generator.next() as UInt64
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    var beginMarker: String { "__QLAB_BEGIN_\(nonce)__" }
    var endMarker: String { "__QLAB_END_\(nonce)__=" }

    /// The line(s) to type for `command` (already quoted for `eval`).
    func line(evaluating quoted: String) -> String {
        if shell == .grub {
            return "echo \"__QLAB_B\"\"EGIN_\(nonce)__\"; eval \(quoted); qlab_status=$?; echo; echo \"__QLAB_E\"\"ND_\(nonce)__=$qlab_status\""
        }
        return "printf '%s%s\\n' '__QLAB_B' 'EGIN_\(nonce)__'; (eval \(quoted)) </dev/null; printf '\\n%s%s=%d\\n' '__QLAB_E' 'ND_\(nonce)__' $?"
    }

    /// Where `command` gets typed: one line, or chunks written to a file in the guest first.
    enum Plan: Sendable, Equatable {
        case line(String)
        /// Each chunk line appends part of the command to `file` and prints its `marker`;
        /// `line` then runs the file (framed as usual) and removes it.
        case chunked(file: String, chunks: [(line: String, marker: String)], line: String)

        static func == (a: Plan, b: Plan) -> Bool {
            switch (a, b) {
            case (.line(let x), .line(let y)): return x == y
            case (.chunked(let f1, let c1, let l1), .chunked(let f2, let c2, let l2)):
                return f1 == f2 && l1 == l2 && c1.map(\.line) == c2.map(\.line) && c1.map(\.marker) == c2.map(\.marker)
            default: return false
            }
        }
    }

    /// The plan for `command`: one line when every physical line of it fits
    /// in `maximumLineBytes` (a tty's canonical input holds 4095 bytes per
    /// line; busybox's line editor 1023), else chunks of it written to a file
    /// in the guest's /tmp, each waited for.
    func plan(_ command: String, maximumLineBytes: Int) throws(GuestError) -> Plan {
        if command.utf8.contains(0) {
            throw GuestError.commandNotTypeable("the command contains a NUL byte, which no shell command can hold")
        }
        if shell == .grub { return try grubPlan(command, maximumLineBytes: maximumLineBytes) }
        let single = line(evaluating: Self.shellQuote(command))
        if Self.longestLine(single) <= maximumLineBytes { return .line(single) }
        let file = "/tmp/.qlab-cmd-\(nonce)"
        func chunkLine(_ quoted: String, _ index: Int) -> (line: String, marker: String) {
            ("printf '%s' \(quoted) >>\(file); printf '%s%s\\n' '__QLAB_C' 'HUNK_\(nonce)_\(index)__'",
             "__QLAB_CHUNK_\(nonce)_\(index)__")
        }
        let budget = maximumLineBytes - chunkLine("", 999_999).line.utf8.count
        guard budget >= 32 else {
            throw GuestError.commandNotTypeable("the console's line limit (\(maximumLineBytes) bytes) is too small for qlab's command framing")
        }
        var chunks: [(line: String, marker: String)] = []
        var current = ""
        var currentBytes = 2
        for character in command {
            let bytes = Self.shellQuote(String(character)).utf8.count - 2
            if currentBytes + bytes > budget && !current.isEmpty {
                chunks.append(chunkLine(Self.shellQuote(current), chunks.count))
                current = ""
                currentBytes = 2
            }
            current.append(character)
            currentBytes += bytes
        }
        if !current.isEmpty { chunks.append(chunkLine(Self.shellQuote(current), chunks.count)) }
        let run = "printf '%s%s\\n' '__QLAB_B' 'EGIN_\(nonce)__'; (eval '. \(file)') </dev/null; __qlab_s=$?; rm -f \(file); "
            + "printf '\\n%s%s=%d\\n' '__QLAB_E' 'ND_\(nonce)__' $__qlab_s"
        return .chunked(file: file, chunks: chunks, line: run)
    }

    /// GRUB's line: the command single-quoted for `eval` (GRUB's quoting is
    /// the shell's: `'` as `'\\''`), one line, no control characters (GRUB's
    /// line editor acts on them, and it has no `printf` to make them).
    private func grubPlan(_ command: String, maximumLineBytes: Int) throws(GuestError) -> Plan {
        if let control = command.unicodeScalars.first(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            let what = control == "\n" ? "a line break (GRUB takes one line: join commands with ';')" : "control character U+\(String(control.value, radix: 16, uppercase: true))"
            throw GuestError.commandNotTypeable("the command contains \(what), which GRUB's console cannot take")
        }
        let quoted = "'" + command.replacingOccurrences(of: "'", with: "'\\''") + "'"
        let single = line(evaluating: quoted)
        guard single.utf8.count <= maximumLineBytes else {
            throw GuestError.commandNotTypeable(
                "the command is \(command.utf8.count) bytes; GRUB's console takes lines of at most \(maximumLineBytes) bytes with qlab's framing, and has no files to write a longer one to")
        }
        return .line(single)
    }

    /// The exit status of a finished command: `$?` as the shell printed it;
    /// for GRUB, 1 when `$?` is 0 but GRUB printed an `error: ` line.
    func exitStatus(reported: Int?, output: String) -> Int32 {
        let status = Int32(truncatingIfNeeded: reported ?? -1)
        guard shell == .grub, status == 0 else { return status }
        let failed = output.split(separator: "\n").contains { $0.hasPrefix("error: ") }
        return failed ? Self.grubFailedStatus : status
    }

    static func longestLine(_ text: String) -> Int {
        text.utf8.split(separator: 0x0A, omittingEmptySubsequences: false).map(\.count).max() ?? 0
    }

    /// `text` as one shell word: single-quoted, `'` as `'\''`, and control
    /// characters other than newline produced by printf (a tty would act on
    /// them: ^C interrupts, ^U kills the line, Tab completes in a line editor).
    static func shellQuote(_ text: String) -> String {
        var quoted = "'"
        for scalar in text.unicodeScalars {
            switch scalar.value {
            case 0x27:
                quoted += "'\\''"
            case 0x0A:
                quoted.unicodeScalars.append(scalar)
            case 0x00..<0x20, 0x7F:
                let octal = String(scalar.value, radix: 8)
                quoted += "'\"$(printf '\\" + String(repeating: "0", count: 3 - octal.count) + octal + "')\"'"
            default:
                quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "'"
    }

    /// The command's output from what the console printed between the
    /// markers: `\r`s before line ends dropped, and the `\n` that precedes
    /// the end marker (qlab's) removed.
    /// GRUB ends lines with `\n\r`: every `\r` is dropped (`dropAllReturns`).
    static func output(from bytes: ArraySlice<UInt8>, dropAllReturns: Bool = false) -> String {
        var cleaned: [UInt8] = []
        cleaned.reserveCapacity(bytes.count)
        for byte in bytes {
            if dropAllReturns && byte == 0x0D { continue }
            if byte == 0x0A {
                while cleaned.last == 0x0D { cleaned.removeLast() }
            }
            cleaned.append(byte)
        }
        while cleaned.last == 0x0D { cleaned.removeLast() }
        if cleaned.last == 0x0A { cleaned.removeLast() }
        return String(decoding: cleaned, as: UTF8.self)
    }

    /// `text` without qlab's marker lines (`__QLAB_BEGIN_N__`, `__QLAB_END_N__=S`,
    /// `__QLAB_CHUNK_N_I__`), so a console tail shows what the guest printed.
    /// A prompt before a marker stays.
    static func withoutMarkers(_ text: String) -> String {
        var lines: [Substring] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            guard let range = line.firstRange(of: "__QLAB_"), isMarker(line[range.lowerBound...]) else {
                lines.append(line)
                continue
            }
            let before = line[..<range.lowerBound]
            if !before.allSatisfy(\.isWhitespace) { lines.append(before) }
        }
        // The line end qlab prints before an end marker leaves an empty line.
        return lines.joined(separator: "\n")
    }

    static func isMarker(_ text: Substring) -> Bool {
        for kind in ["__QLAB_BEGIN_", "__QLAB_END_", "__QLAB_CHUNK_"] where text.hasPrefix(kind) {
            let rest = text.dropFirst(kind.count)
            let nonce = rest.prefix { $0.isHexDigit }
            guard nonce.count == 16 else { return false }
            var tail = rest.dropFirst(16)
            if kind == "__QLAB_CHUNK_" {
                guard tail.first == "_" else { return false }
                tail = tail.dropFirst().drop { $0.isNumber }
            }
            guard tail.hasPrefix("__") else { return false }
            tail = tail.dropFirst(2)
            if kind == "__QLAB_END_" {
                guard tail.first == "=" else { return false }
                tail = tail.dropFirst().drop { $0.isNumber || $0 == "-" }
            }
            return tail.allSatisfy(\.isWhitespace)
        }
        return false
    }
}
