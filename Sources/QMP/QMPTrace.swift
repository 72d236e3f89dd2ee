#if canImport(Glibc)
import Glibc
#endif
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
/// hold what the guest printed), and must be the caller's own with no access
/// for others (``PrivateAppendFile``); secret values are masked
/// (``QMPTraceMasking``). Lines from several processes interleave whole.
public final class QMPTraceFile: QMPTracer {
    public let path: String
    /// Who traced: "qlab run (pid 123)", "supervisor (pid 45)".
    public let client: String
    private let fd: Int32
    private let lock = Mutex(())

    public init(path: String, client: String) throws(SystemCallError) {
        self.fd = try PrivateAppendFile.open(path)
        self.path = path
        self.client = client
    }

    deinit { close(fd) }

    public func record(_ direction: QMPTraceDirection, _ message: JSONValue) {
        let now = UTCTime.now()
        let line: JSONValue = [
            "at": .string(UTCTime.iso8601(now)), "at_seconds": .double((now * 1e6).rounded() / 1e6),
            "direction": .string(direction.rawValue), "client": .string(client), "message": QMPTraceMasking.masked(message),
        ]
        guard var bytes = try? line.serialized(pretty: false) else { return }
        bytes.append(0x0A)
        // One write(2) per line: O_APPEND keeps lines of concurrent writers whole.
        lock.withLock { _ in
            var offset = 0
            while offset < bytes.count {
                let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { return }
                offset += written
            }
        }
    }
}

/// Secret values in QMP messages, replaced before a trace is written: the
/// `data` of a `secret` object (`object-add`; also under `props`, the form before
/// QEMU 6.0), which is what a block driver's `password-secret` or `key-secret`
/// names, and every `password` member (`change-vnc-password`, `set_password`,
/// wherever else a command takes one). The message is walked as a JSON value;
/// nothing is matched as text. HMP text (`human-monitor-command`) is not parsed:
/// do not type secrets through it while tracing.
public enum QMPTraceMasking {
    /// What a masked value is written as.
    public static let mask = JSONValue.string("<masked>")

    public static func masked(_ message: JSONValue) -> JSONValue {
        guard case .object(var object) = message else { return message }
        for key in ["execute", "exec-oob"] {
            guard let command = object[key]?.stringValue, let arguments = object["arguments"] else { continue }
            object["arguments"] = maskedArguments(arguments, command: command)
            return .object(object)
        }
        return message
    }

    static func maskedArguments(_ arguments: JSONValue, command: String) -> JSONValue {
        guard case .object(var object) = arguments else { return arguments }
        if command == "object-add", object["qom-type"]?.stringValue == "secret" {
            if object["data"] != nil { object["data"] = mask }
            if case .object(var props)? = object["props"], props["data"] != nil {
                props["data"] = mask
                object["props"] = .object(props)
            }
        }
        return maskingPasswords(.object(object))
    }

    /// Every `password` member, at any depth.
    static func maskingPasswords(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let object):
            return .object(JSONObject(object.map { entry in (entry.key, entry.key == "password" && !entry.value.isNull ? mask : maskingPasswords(entry.value)) }))
        case .array(let items):
            return .array(items.map(maskingPasswords))
        default:
            return value
        }
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
