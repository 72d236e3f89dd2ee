import ArgumentParser
import LabCore

/// Shell completion for lab names, device names and snapshot tags
/// (`qlab --generate-completion-script bash|zsh|fish`; scripts/install installs them).
enum Completions {
    /// A lab name known here, or a lab file.
    static let lab = CompletionKind.custom { (_: [String], _: Int, prefix: String) in LabCompletion.labs(prefix: prefix) }

    /// A device of the lab named in the word before this one (`qlab hotplug LAB DEVICE`).
    static let device = CompletionKind.custom { (words: [String], index: Int, prefix: String) in
        guard index >= 1, index - 1 < words.count else { return [] }
        return LabCompletion.devices(lab: words[index - 1], prefix: prefix)
    }

    /// `qlab run --test/--guest/--device`: the names in the lab file the line names.
    static func run(_ choice: LabCompletion.RunChoice) -> CompletionKind {
        .custom { (words: [String], _: Int, prefix: String) in LabCompletion.runChoices(choice, words: words, prefix: prefix) }
    }

    /// A snapshot tag of the running lab named in the word before this one (`qlab snapshot load LAB TAG`).
    static let snapshotTag = CompletionKind.custom { (words: [String], index: Int, prefix: String) async in
        guard index >= 1, index - 1 < words.count else { return [] }
        return await LabCompletion.snapshotTags(lab: words[index - 1], prefix: prefix)
    }
}
