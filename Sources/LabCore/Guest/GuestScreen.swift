import Platform
import QMP


/// What a guest with a display adapter (`display: vga`) shows: a picture of
/// its screen (QMP `screendump`, PNG) and, in a VGA text mode, its text read
/// from guest memory (QMP `pmemsave` of the 0xB8000 buffer): what firmware,
/// option ROMs (a SCSI card's BIOS banner) and DOS tools print before or
/// without any serial console. QEMU writes each file into the lab's private
/// runtime directory under an unpredictable name; qlab reads and removes it.
public struct GuestScreen: Sendable {
    public let session: LabSession

    public init(session: LabSession) { self.session = session }

    public enum ScreenError: ExitStatusCarrying, Sendable, CustomStringConvertible {
        /// The guest has no display adapter.
        case noDisplay(lab: String, guest: String)
        /// QEMU wrote no file, or not what was asked.
        case unreadable(String)
        /// Texts that did not appear within the timeout (of those awaited together), and the screen last read.
        case textNotShown(texts: [String], seconds: Double, screen: String)

        public var description: String {
            switch self {
            case .noDisplay(let lab, let guest):
                return "guest \(guest) of lab \(lab) has no display adapter: set `display: vga` in the lab file (top level or the guest) and restart the lab"
            case .unreadable(let why): return why
            case .textNotShown(let texts, let seconds, _):
                return "the screen did not show \(Self.quotedList(texts)) within \(TestRunner.wholeSeconds(seconds)) s"
            }
        }

        /// `"a"`, `"a" or "b"`, `"a", "b" or "c"`: what the screen lacked.
        static func quotedList(_ texts: [String]) -> String {
            let quoted = texts.map { "\"\($0)\"" }
            guard quoted.count > 1 else { return quoted.first ?? "" }
            return quoted.dropLast().joined(separator: ", ") + " or " + quoted.last!
        }

        /// Exit status: 2 for a lab without a display (fix the lab file), 124 for a wait that ran out, else 1.
        public var exitStatus: ExitStatus {
            switch self {
            case .noDisplay: return .usage
            case .textNotShown: return .timeout
            case .unreadable: return .failed
            }
        }
    }

    /// The guest's display, or ``ScreenError/noDisplay(lab:guest:)``.
    func requireDisplay() throws {
        let guest = try session.guest
        guard session.lab.display(for: guest) != .none else { throw ScreenError.noDisplay(lab: session.lab.name, guest: guest.name) }
    }

    /// The most bytes read back from a file QEMU wrote (a PNG of a large screen is a few MiB).
    static let maximumFileBytes = 64 << 20

    /// Has QEMU write into a fresh private file, reads it back and removes it.
    func viaPrivateFile(suffix: String, _ write: (String) async throws -> Void) async throws -> [UInt8] {
        try session.runtime.checkDirectories()
        let path = session.runtime.directory + "/." + RandomName.hex() + suffix
        defer { FileSystem.remove(path) }
        try await write(path)
        // O_NOFOLLOW: QEMU made a regular file here; anything else is refused.
        guard let fd = try? FileDescriptor.open(path, .readOnly, options: [.noFollow, .closeOnExec]) else {
            throw ScreenError.unreadable("QEMU wrote no file at \(path)")
        }
        defer { fd.closeIgnoringErrors() }
        guard let bytes = fd.readAll(limit: Self.maximumFileBytes) else { throw ScreenError.unreadable("cannot read \(path)") }
        return bytes
    }

    // MARK: Screenshot

    /// The screen as PNG bytes (QMP `screendump`, format png: QEMU 7.1+).
    public func screenshot() async throws -> [UInt8] {
        try requireDisplay()
        let bytes = try await viaPrivateFile(suffix: ".png") { try await session.qmp.screendump(filename: $0, format: "png") }
        guard bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) else { throw ScreenError.unreadable("QEMU's screendump is not a PNG") }
        return bytes
    }

    /// Saves the screen to `path` as a PNG, as every file handed on is written
    /// (``OutputFile``: a regular file atomically, mode 0644; a device or FIFO as a stream).
    @discardableResult
    public func saveScreenshot(to path: String) async throws -> Int {
        let bytes = try await screenshot()
        try OutputFile.write(path, bytes)
        return bytes.count
    }

    // MARK: Text

    /// The VGA text screen: read from guest memory, decoded from CP437 (attributes dropped).
    public func text() async throws -> TextScreen {
        try requireDisplay()
        // The BIOS data area says the mode, the size and where the shown page starts.
        let bda = try await viaPrivateFile(suffix: ".bda") { try await session.qmp.pmemsave(address: 0x400, size: 0x100, filename: $0) }
        guard bda.count == 0x100 else { throw ScreenError.unreadable("pmemsave of the BIOS data area gave \(bda.count) bytes") }
        let layout = TextScreen.Layout(biosDataArea: bda)
        let cells = try await viaPrivateFile(suffix: ".txt") {
            try await session.qmp.pmemsave(address: layout.address, size: layout.columns * layout.rows * 2, filename: $0)
        }
        return TextScreen(layout: layout, cells: cells)
    }

    /// Polls the text screen until it shows `text`; throws ``ScreenError/textNotShown(texts:seconds:screen:)`` after `timeout`.
    @discardableResult
    public func waitForText(_ text: String, timeout: Duration, poll: Duration = .milliseconds(200)) async throws -> TextScreen {
        try await waitForTexts([text], until: ContinuousClock.now + timeout, seconds: timeout.inSeconds, poll: poll)
    }

    /// Polls the text screen until each of `texts` has been on it (together
    /// or one after another: a text seen once counts), all within one wait
    /// that ends at `deadline`; throws ``ScreenError/textNotShown(texts:seconds:screen:)``
    /// with those never seen (`seconds`: the wait as the message says it).
    /// `while` runs before each poll (``GuestKeyboard``'s presses until the screen shows a text).
    @discardableResult
    public func waitForTexts(_ texts: [String], until deadline: ContinuousClock.Instant, seconds: Double,
                             poll: Duration = .milliseconds(200), while action: (() async throws -> Void)? = nil) async throws -> TextScreen {
        var missing = texts
        var last: TextScreen?
        while true {
            try Task.checkCancellation()
            try await action?()
            let screen = try await self.text()
            missing.removeAll { screen.contains($0) }
            if missing.isEmpty { return screen }
            last = screen
            if ContinuousClock.now >= deadline { break }
            try await Task.sleep(for: poll)
        }
        throw ScreenError.textNotShown(texts: missing, seconds: seconds, screen: last?.text ?? "")
    }
}

/// A VGA text screen as qlab read it.
public struct TextScreen: Sendable {
    /// Where the text is and how large: from the BIOS data area (0x449 mode,
    /// 0x44A columns, 0x44E page offset, 0x484 rows - 1), 80x25 at 0xB8000 by default.
    public struct Layout: Sendable, Hashable {
        public var mode: Int
        public var columns: Int
        public var rows: Int
        public var address: UInt64

        public init(mode: Int = 3, columns: Int = 80, rows: Int = 25, address: UInt64 = 0xB8000) {
            self.mode = mode
            self.columns = columns
            self.rows = rows
            self.address = address
        }

        /// `bda`: guest-physical 0x400-0x4FF. Values out of a text mode's range fall back to 80x25.
        public init(biosDataArea bda: [UInt8]) {
            self.init()
            guard bda.count >= 0x85 else { return }
            mode = Int(bda[0x49])
            let columns = Int(bda[0x4A]) | Int(bda[0x4B]) << 8
            if (20...255).contains(columns) { self.columns = columns }
            // 0: a BIOS that never set it (CGA/MDA); the screen is then 25 rows.
            let rows = Int(bda[0x84]) + 1
            if bda[0x84] != 0, (10...100).contains(rows) { self.rows = rows }
            let offset = Int(bda[0x4E]) | Int(bda[0x4F]) << 8
            // Mode 7 (monochrome) lives at 0xB0000; the page offset stays inside the 32 KiB window.
            let base: UInt64 = mode == 7 ? 0xB0000 : 0xB8000
            address = base + UInt64(offset + self.columns * self.rows * 2 <= 0x8000 ? offset : 0)
        }

        /// Modes 0-3 and 7 are text; a graphics mode leaves the buffer stale.
        public var isTextMode: Bool { [0, 1, 2, 3, 7].contains(mode) }
    }

    public var layout: Layout
    /// One string per row, trailing blanks removed.
    public var lines: [String]

    public init(layout: Layout, cells: [UInt8]) {
        self.layout = layout
        var lines: [String] = []
        for row in 0..<layout.rows {
            var bytes: [UInt8] = []
            for column in 0..<layout.columns {
                let index = (row * layout.columns + column) * 2
                bytes.append(index < cells.count ? cells[index] : 0x20)
            }
            var line = CodePage437.decode(bytes)
            while let last = line.last, last == " " || last == "\u{A0}" { line.removeLast() }
            lines.append(line)
        }
        self.lines = lines
    }

    /// The rows joined by newlines, blank rows at the end left out.
    public var text: String {
        var rows = lines
        while rows.last?.isEmpty == true { rows.removeLast() }
        return rows.joined(separator: "\n")
    }

    /// Whether `needle` is on the screen (within one row).
    public func contains(_ needle: String) -> Bool { lines.contains { $0.contains(needle) } }

    public var json: JSONValue {
        ["mode": JSONValue(layout.mode), "text_mode": .bool(layout.isTextMode), "columns": JSONValue(layout.columns),
         "rows": JSONValue(layout.rows), "address": JSONValue(Int(layout.address)), "lines": .array(lines.map(JSONValue.string)),
         "text": .string(text)]
    }
}
