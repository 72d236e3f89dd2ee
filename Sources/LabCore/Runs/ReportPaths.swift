import Platform
/// Paths inside report files: a report names its screenshots relative to its
/// own directory (so CI artifacts move as a folder) and qlab works with them
/// absolute.
public enum ReportPaths {
    /// The absolute directory `path` is in.
    public static func directory(of path: String) -> String {
        let absolute = FileSystem.absolute(path)
        guard let slash = absolute.lastIndex(of: "/") else { return "." }
        return slash == absolute.startIndex ? "/" : String(absolute[..<slash])
    }

    /// `path` relative to `directory` when it lies under it, else as it is.
    public static func relative(_ path: String, to directory: String?) -> String {
        guard let directory else { return path }
        let prefix = directory.hasSuffix("/") ? directory : directory + "/"
        return path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : path
    }

    /// `path` made absolute against `directory` (absolute paths stay).
    public static func absolute(_ path: String, from directory: String) -> String {
        path.hasPrefix("/") ? path : directory + "/" + path
    }

    /// The working directory (for JUnit attachment paths, which CI reads relative to its checkout).
    public static var workingDirectory: String { directory(of: "x") }
}
