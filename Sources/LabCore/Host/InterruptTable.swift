/// /proc/interrupts, parsed.
///
/// The kernel prints (kernel/irq/proc.c `show_interrupts`) a header of CPU
/// names, then one row per IRQ: the number, one count per CPU, the irq chip's
/// name, on newer kernels the hardware irq number and flow handler
/// (`16-fasteoi`), and the handlers' names joined by ", ":
///
///                CPU0       CPU1
///       16:      1234          0   IO-APIC  16-fasteoi   ehci_hcd:usb1, aic7xxx
///
/// Older kernels print `IO-APIC-fasteoi` as one word. Rows such as `NMI:` or
/// `LOC:` have non-numeric names and are kept with no chip or handlers.
public struct InterruptTable: Sendable, Hashable {
    public struct Line: Sendable, Hashable {
        /// The row's name: the IRQ number for device interrupts, or NMI, LOC, ...
        public var name: String
        public var irq: Int? { Int(name) }
        public var counts: [UInt64]
        /// The irq chip, e.g. `IO-APIC`, `IR-IO-APIC`, `PCI-MSI-0000:00:1f.2`.
        public var chip: String
        /// The hardware irq and flow, e.g. `16-fasteoi`, when printed.
        public var hardwareIRQ: String?
        /// The registered handlers' names in registration order.
        public var handlers: [String]
    }

    public var cpus: [String]
    public var lines: [Line]

    public init(cpus: [String] = [], lines: [Line] = []) {
        self.cpus = cpus
        self.lines = lines
    }

    public init(parsing text: String) {
        var rows = text.split(separator: "\n", omittingEmptySubsequences: true)[...]
        var cpus: [String] = []
        if let header = rows.first, !header.contains(":") {
            cpus = header.split(separator: " ").map(String.init)
            rows = rows.dropFirst()
        }
        var lines: [Line] = []
        for row in rows {
            guard let colon = row.firstIndex(of: ":") else { continue }
            let name = row[..<colon].hostTrimmed()
            var words = row[row.index(after: colon)...].split(separator: " ")[...]
            var counts: [UInt64] = []
            while counts.count < max(cpus.count, 1), let first = words.first, let count = UInt64(first) {
                counts.append(count)
                words = words.dropFirst()
            }
            guard Int(name) != nil, let chip = words.first else {
                lines.append(Line(name: String(name), counts: counts, chip: "", hardwareIRQ: nil, handlers: []))
                continue
            }
            words = words.dropFirst()
            var hardwareIRQ: String?
            if let next = words.first, Self.looksLikeHardwareIRQ(next) {
                hardwareIRQ = String(next)
                words = words.dropFirst()
            }
            if let next = words.first, next == "Edge" || next == "Level" || next == "edge" || next == "level" {
                words = words.dropFirst()
            }
            let handlers = words.joined(separator: " ").split(separator: ",").map { String($0.hostTrimmed()) }
                .filter { !$0.isEmpty }
            lines.append(Line(name: String(name), counts: counts, chip: String(chip), hardwareIRQ: hardwareIRQ, handlers: handlers))
        }
        self.init(cpus: cpus, lines: lines)
    }

    public func line(irq: Int) -> Line? {
        lines.first { $0.irq == irq }
    }

    /// `16-fasteoi`, `16`, `524288-edge`: digits, optionally followed by `-flow`.
    private static func looksLikeHardwareIRQ(_ word: Substring) -> Bool {
        let digits = word.prefix(while: \.isNumber)
        guard !digits.isEmpty else { return false }
        let rest = word.dropFirst(digits.count)
        return rest.isEmpty || (rest.hasPrefix("-") && rest.count > 1 && !rest.contains(","))
    }
}

extension Substring {
    func hostTrimmed() -> Substring {
        var text = self
        while let first = text.first, first.isWhitespace { text.removeFirst() }
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return text
    }
}
