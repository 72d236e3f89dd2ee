import Platform
import Synchronization

/// Which way a traced QMP message went.
public enum QMPTraceDirection: String, Sendable {
    /// From qlab to QEMU (a command).
    case sent = "out"
    /// From QEMU to qlab (greeting, reply, event).
    case received = "in"
}

/// Sees every QMP message a ``QMPClient`` sends and receives, like
/// `qmp-shell -l` and libvirt's monitor log. Called on the sending task
/// and on the reader thread: a tracer must be quick and thread-safe.
public protocol QMPTracer: Sendable {
    func record(_ direction: QMPTraceDirection, _ message: JSONValue)
}

/// A QMP trace as JSON Lines, appended to a file (made through jansson):
/// `{"at": ISO 8601, "at_seconds": S, "direction": "out"|"in", "client": ..., "message": {...}}`.
/// The file is opened `O_APPEND | O_NOFOLLOW`, created 0600 (a trace may
/// hold what the guest printed); lines from several processes interleave whole.
public final class QMPTraceFile: QMPTracer {
    public let path: String
    /// Who traced: "qlab run (pid 123)", "supervisor (pid 45)".
    public let client: String
    private let fd: FileDescriptor
    private let lock = Mutex(())

    public init(path: String, client: String) throws(SystemCallError) {
        do {
            fd = try FileDescriptor.open(
                path, .writeOnly, options: [.create, .append, .noFollow, .closeOnExec], permissions: [.ownerReadWrite])
        } catch {
            throw SystemCallError("open \(path)", thrown: error)
        }
        self.path = path
        self.client = client
    }

    deinit { fd.closeIgnoringErrors() }

    public func record(_ direction: QMPTraceDirection, _ message: JSONValue) {
        let now = UTCTime.now()
        let line: JSONValue = [
            "at": .string(UTCTime.iso8601(now)), "at_seconds": .double((now * 1e6).rounded() / 1e6),
            "direction": .string(direction.rawValue), "client": .string(client), "message": message,
        ]
        guard var bytes = try? line.serialized(pretty: false) else { return }
        bytes.append(0x0A)
        // One write(2) per line: O_APPEND keeps lines of concurrent writers whole.
        lock.withLock { _ in try? fd.writeEvery(bytes, what: path) }
    }
}

/// Several tracers as one (a command's `--trace-qmp` and a lab's own trace).
public struct QMPTracers: QMPTracer {
    public var tracers: [any QMPTracer]
    public init(_ tracers: [any QMPTracer]) { self.tracers = tracers }
    public func record(_ direction: QMPTraceDirection, _ message: JSONValue) {
        for tracer in tracers { tracer.record(direction, message) }
    }

    /// nil for none, the tracer itself for one.
    public static func combine(_ tracers: [(any QMPTracer)?]) -> (any QMPTracer)? {
        let present = tracers.compactMap { $0 }
        return present.count <= 1 ? present.first : QMPTracers(present)
    }
}

/// The process's tracer for every QMP connection it opens (`--trace-qmp FILE`):
/// set once, at start, by the command line.
public enum QMPTracing {
    private static let shared = Mutex<(any QMPTracer)?>(nil)

    public static var processTracer: (any QMPTracer)? {
        get { shared.withLock { $0 } }
        set { shared.withLock { $0 = newValue } }
    }
}
