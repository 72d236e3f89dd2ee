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
    /// record when it runs, else from its lab file.
    public static func devices(lab: String, prefix: String, environment: [String: String] = currentEnvironment()) -> [String] {
        guard let runtime = try? LabRuntime.locate(lab, environment: environment) else { return [] }
        let names: [String]
        if let record = (try? runtime.record) ?? nil {
            names = record.devices.map(\.name)
        } else if LabRuntime.isLabFile(lab), let loaded = try? Lab.load(path: lab) {
            names = loaded.devices.map(\.name)
        } else {
            names = []
        }
        return names.filter { $0.hasPrefix(prefix) }
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
