import Platform

/// What shell completion offers for qlab's arguments: lab names, device names
/// and snapshot tags. Completion runs on every Tab, so each answer is cheap and
/// never fails: anything unreadable completes to nothing.
public enum LabCompletion {
    /// Lab names known here (runtime files or state) and lab files (`*.yaml`,
    /// `*.yml`) beside `prefix`, each starting with `prefix`.
    public static func labs(prefix: String, environment: [String: String] = currentEnvironment()) -> [String] {
        var candidates = prefix.contains("/") ? [] : ((try? LabRuntime.knownNames(environment: environment)) ?? [])
        let slash = prefix.lastIndex(of: "/")
        let directory = slash.map { String(prefix[...$0]) } ?? ""
        for entry in HostFiles.list(directory.isEmpty ? "." : directory) ?? [] where !entry.hasPrefix(".") {
            let path = directory + entry
            if entry.hasSuffix(".yaml") || entry.hasSuffix(".yml") {
                candidates.append(path)
            } else if FileSystem.isDirectory(path) {
                candidates.append(path + "/")
            }
        }
        return candidates.filter { $0.hasPrefix(prefix) }.sorted()
    }

    /// The devices of the lab named by `lab` (a name or a lab file): from its
    /// record when it runs, else from its lab file (a stopped lab's name: the
    /// file it was last started from).
    public static func devices(lab: String, prefix: String, environment: [String: String] = currentEnvironment()) -> [String] {
        guard let runtime = try? LabRuntime.locate(lab, environment: environment) else { return [] }
        let names: [String]
        if let record = (try? runtime.record) ?? nil {
            names = record.devices.map(\.name)
        } else {
            names = labFile(lab, runtime: runtime)?.devices.map(\.name) ?? []
        }
        return names.filter { $0.hasPrefix(prefix) }
    }

    /// What `qlab run`'s `--test`, `--guest` and `--device` take.
    public enum RunChoice: Sendable {
        case test, guest, device
    }

    /// The tests, guests or matrix devices of the lab a `qlab run` command line
    /// names (`words`: the line's words; the lab is its first lab file, else
    /// its first known lab name), from the lab file.
    public static func runChoices(_ choice: RunChoice, words: [String], prefix: String, environment: [String: String] = currentEnvironment()) -> [String] {
        let arguments = words.drop { $0 != "run" }.dropFirst().filter { !$0.hasPrefix("-") }
        let known = Set((try? LabRuntime.knownNames(environment: environment)) ?? [])
        guard let lab = arguments.first(where: LabRuntime.isLabFile) ?? arguments.first(where: known.contains),
            let runtime = try? LabRuntime.locate(lab, environment: environment),
            let loaded = labFile(lab, runtime: runtime)
        else { return [] }
        let names: [String]
        switch choice {
        case .test: names = loaded.tests.map(\.name)
        case .guest: names = loaded.guests.map(\.name)
        case .device: names = loaded.matrixDevices
        }
        return names.filter { $0.hasPrefix(prefix) }
    }

    /// The lab file `lab` is, or the one a lab of that name was last started from.
    static func labFile(_ lab: String, runtime: LabRuntime) -> Lab? {
        if LabRuntime.isLabFile(lab) { return try? Lab.load(path: lab) }
        guard let file = runtime.lastLabFile else { return nil }
        return try? Lab.load(path: file)
    }

    /// The snapshot tags of a running lab, asked over QMP with short timeouts.
    public static func snapshotTags(lab: String, prefix: String, environment: [String: String] = currentEnvironment()) async -> [String] {
        guard let runtime = try? LabRuntime.locate(lab, environment: environment), (try? runtime.record) != nil,
            // QEMU serves one QMP client at a time: a busy monitor completes to nothing, quickly.
            let session = try? await LabSession.open(runtime: runtime, connectTimeout: .seconds(2))
        else { return [] }
        defer { session.close() }
        let tags = (try? await session.listSnapshots().map(\.tag)) ?? []
        return tags.filter { $0.hasPrefix(prefix) }
    }
}
