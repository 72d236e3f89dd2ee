import Platform

/// Finding a lab's runtime from what a command was given (reads lab files).
extension LabRuntime {
    /// A lab by name, or by lab file (whose `name:` is used). Its directories
    /// that exist are checked (``checkDirectories()``): a command on a lab
    /// whose runtime or state dir another user can change stops here.
    public static func locate(_ nameOrFile: String, environment: [String: String] = currentEnvironment()) throws -> LabRuntime {
        let runtime: LabRuntime
        if isLabFile(nameOrFile) {
            let lab = try Lab.load(path: nameOrFile)
            runtime = LabRuntime(name: lab.name, environment: environment)
        } else {
            guard LabName.isValid(nameOrFile) else { throw LabError.unknownLab(nameOrFile) }
            runtime = LabRuntime(name: nameOrFile, environment: environment)
        }
        try runtime.checkDirectories()
        return runtime
    }

    /// `locate`, for commands on an existing lab: a lab file always names one;
    /// a bare name must have a record or state here, else `unknownLab` with
    /// the nearest known name. Creates nothing.
    public static func locateExisting(_ nameOrFile: String, environment: [String: String] = currentEnvironment()) throws -> LabRuntime {
        let runtime: LabRuntime
        do {
            runtime = try locate(nameOrFile, environment: environment)
        } catch LabError.unknownLab(let name, _) {
            throw LabError.unknownLab(name, suggestion: Suggestion.closest(to: name, in: suggestable(for: name, environment: environment)))
        }
        if isLabFile(nameOrFile) || FileSystem.entryExists(runtime.recordPath) || FileSystem.entryExists(runtime.stateDirectory) {
            return runtime
        }
        throw LabError.unknownLab(runtime.name, suggestion: Suggestion.closest(to: runtime.name, in: suggestable(for: runtime.name, environment: environment)))
    }

    /// Whether `locate` reads `nameOrFile` as a lab file's path rather than a name.
    public static func isLabFile(_ nameOrFile: String) -> Bool {
        nameOrFile.contains("/") || nameOrFile.hasSuffix(".yaml") || nameOrFile.hasSuffix(".yml")
    }

    /// Every lab with runtime files or state here, sorted (an error when a
    /// root fails the checks of ``PrivateDirectory``).
    public static func knownNames(environment: [String: String] = currentEnvironment()) throws -> [String] {
        let running = try all(environment: environment).map(\.name)
        let stateRoot = try PrivateDirectory.open(LabDirectories.stateRoot(environment: environment), role: .state, create: false)
        let stateful = (stateRoot?.names() ?? []).filter(LabName.isValid)
        return Set(running + stateful).sorted()
    }

    /// The names a "did you mean" for `typed` may offer: the known labs but
    /// `--jobs` clones' names (`LAB-j2` when `LAB` is what was typed or a
    /// known lab), which are a run's workers, not labs of the user's.
    static func suggestable(for typed: String, environment: [String: String]) -> [String] {
        let names = (try? knownNames(environment: environment)) ?? []
        let sources = Set(names + [typed])
        return names.filter { name in
            guard let dash = name.lastIndex(of: "-"), name[name.index(after: dash)...].hasPrefix("j"),
                let worker = Int(name[name.index(dash, offsetBy: 2)...]), worker >= 2
            else { return true }
            return !sources.contains(String(name[..<dash]))
        }
    }

    /// The lab file behind `nameOrFile`: the path itself, or for a name the file
    /// its running record or its last start names. `unknownLab` otherwise.
    public static func labFile(for nameOrFile: String, environment: [String: String] = currentEnvironment()) throws -> String {
        if isLabFile(nameOrFile) { return nameOrFile }
        let runtime = try locateExisting(nameOrFile, environment: environment)
        if let file = try runtime.record?.labFile ?? runtime.lastLabFile {
            return file
        }
        throw LabError.unknownLab(nameOrFile, suggestion: nil)
    }
}

extension LabRecord {
    /// The running lab as it was planned: parsed from ``labSource`` (paths
    /// resolve against ``labFile``'s directory as when it was read); an older
    /// record without it reads the lab file. Its name is the record's: a
    /// `--jobs` clone (`LAB-j2`) runs its lab's text, which names the lab
    /// (or, without `name:`, is named after its file).
    public func lab() throws(LabFileError) -> Lab {
        var lab: Lab
        if let labSource {
            lab = try Lab.parse(yaml: labSource, file: labFile)
        } else {
            lab = try Lab.load(path: labFile)
        }
        lab.name = name
        return lab
    }
}

extension LabRuntime {
    /// True when anything of a lab by this name exists: its runtime or state
    /// directory (a record, `lab-file.json`, logs, overlays), its lock file or
    /// its RAM directory. A `--jobs` clone never takes such a name.
    public var hasAnyState: Bool {
        [directory, stateDirectory, lockPath, ramDirectoryPath].contains(where: FileSystem.entryExists)
    }
}
