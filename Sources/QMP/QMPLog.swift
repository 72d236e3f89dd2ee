import Logging

/// The QMP module's logger (`qlab.qmp`): connections, greetings, closes. Quiet
/// unless the program raises the level (`qlab -v`, `--log-level`); the messages
/// themselves go to a ``QMPTracer``, not here.
enum QMPLog {
    static let logger = Logger(label: "qlab.qmp")
}
