import Logging

/// LabCore's logger (`qlab.labcore`): launches, sessions, test-run steps, at
/// `debug`. Quiet unless `qlab -v` or `--log-level` raises the level.
enum LabCoreLog {
    static let logger = Logger(label: "qlab.labcore")
}
