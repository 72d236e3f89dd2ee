import Platform

/// Explains QEMU and kernel error text with ``DiagnosisCatalog``.
public enum Diagnoser {
    /// Every recognised problem in `text`, in order of first appearance, one
    /// per problem and device: lines that describe the same failure (QEMU's
    /// message and the kernel's genirq line for one card) are merged, the
    /// details of each (IRQ, the other driver) filling in the diagnosis.
    public static func diagnose(_ text: String) -> [Diagnosis] {
        // Compiling every pattern costs ~20 ms; only rules whose keywords occur are compiled.
        var compiled: [Int: [Regex<AnyRegexOutput>]] = [:]
        var found: [(rule: Int, device: String?, captures: [String: String], evidence: String)] = []
        for rawLine in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let line = String(rawLine)
            let lower = line.lowercased()
            for (index, rule) in DiagnosisCatalog.rules.enumerated() {
                guard rule.keywords.contains(where: { lower.contains($0) }) else { continue }
                if compiled[index] == nil { compiled[index] = compile(rule) }
                guard let captures = firstMatch(compiled[index]!, in: line) else { continue }
                var device = captures["bdf"].flatMap(normalizedAddress)
                if device == nil, rule.takesDeviceFromLine { device = firstAddress(in: line) }
                if let existing = found.firstIndex(where: { $0.rule == index && ($0.device == device || $0.device == nil || device == nil) }) {
                    if found[existing].device == nil { found[existing].device = device }
                    found[existing].captures.merge(captures) { old, _ in old }
                } else {
                    found.append((index, device, captures, line.trimmingSpaces()))
                }
                break
            }
        }
        let ids = Set(found.map { DiagnosisCatalog.rules[$0.rule].id })
        found.removeAll { entry in !(DiagnosisCatalog.subsumed[DiagnosisCatalog.rules[entry.rule].id] ?? []).isDisjoint(with: ids) }
        return found.map { entry in
            let rule = DiagnosisCatalog.rules[entry.rule]
            let texts = rule.explain(entry.captures)
            return Diagnosis(id: rule.id, device: entry.device, summary: texts.summary, cause: texts.cause, fix: texts.fix, evidence: entry.evidence)
        }
    }

    /// A rule's patterns, compiled per call (Regex values are not `Sendable`,
    /// so no global cache).
    static func compile(_ rule: DiagnosisRule) -> [Regex<AnyRegexOutput>] {
        // The patterns are constants; a bad one is a programming error caught by the tests.
        rule.patterns.map { try! Regex($0).ignoresCase() }
    }


    static func firstMatch(_ patterns: [Regex<AnyRegexOutput>], in line: String) -> [String: String]? {
        for pattern in patterns {
            guard let match = try? pattern.firstMatch(in: line) else { continue }
            var captures: [String: String] = [:]
            for element in match.output {
                if let name = element.name, let value = element.substring {
                    captures[name] = String(value).trimmingSpaces()
                }
            }
            return captures
        }
        return nil
    }

    /// The first full host PCI address (`0000:03:05.0`) in the line.
    static func firstAddress(in line: String) -> String? {
        let regex = try! Regex(#"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]"#)
        guard let match = try? regex.firstMatch(in: line) else { return nil }
        return normalizedAddress(String(line[match.range]))
    }

    static func normalizedAddress(_ text: String) -> String? {
        PCIAddress(text).map(\.description)
    }
}
