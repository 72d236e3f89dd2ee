import Platform

/// This machine's name, as run reports and JUnit write it (times follow ``JSONTime``).
public enum HostName {
    /// This machine's name (`gethostname(2)`), "localhost" when it has none.
    public static func current() -> String {
        ThisProcess.hostName ?? "localhost"
    }
}
