#if canImport(Glibc)
import Glibc
#endif
// Glibc: Revert/ (its fast-revert trust work landed last) still calls the system itself; moving it onto Platform's
// wrappers (FileDescriptor.openAt, pipeCloseOnExec, ChildProcess.killAndReap) is what is left of issue 19 item 4.
import Platform
import QMP
import Synchronization

/// One request to a lab's supervisor over its control socket, and its answer.
public struct ControlRequest: Sendable {
    /// `revert`.
    public var command: String
    public var arguments: JSONObject
    let reply: @Sendable (JSONObject) -> Void

    /// Sends the answer: `{"return": {...}}` or `{"error": {"desc": ...}}`.
    public func respond(_ message: JSONObject) { reply(message) }
}

/// The supervisor's control socket (`RUNTIME/LAB/control.sock`, 0600 in the
/// private runtime dir): clients ask the process that owns QEMU to replace
/// it (a fast revert). Same framing as QMP (newline-delimited JSON objects,
/// ``MessageChannel``): `{"execute": "revert", "arguments": {"tag": "ready"}}`.
/// Only peers of this user are served (`SO_PEERCRED`).
public final class ControlServer: Sendable {
    let path: String
    let listener: Int32
    /// A pipe: a byte written to `stopWrite` wakes the accept thread to end.
    let stopRead: Int32
    let stopWrite: Int32
    let stopped = Mutex(false)
    let mailbox = ControlMailbox()
    let channels = Mutex<[MessageChannel]>([])

    /// Listens on `path` (an old socket file there is removed first: the
    /// runtime dir is private, so it is this lab's own leftover).
    public static func start(path: String) throws -> ControlServer {
        unlink(path)
        let listener = try UnixSocket.listen(path: path)
        var status = stat()
        _ = lstat(path, &status)
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else {
            Glibc.close(listener)
            throw SystemCallError("pipe")
        }
        for fd in ends { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let server = ControlServer(path: path, listener: listener, stopRead: ends[0], stopWrite: ends[1], identity: (status.st_dev, status.st_ino))
        try DetachedThread.start { server.acceptLoop() }
        return server
    }

    /// The socket file's device and inode: close() removes only this file, not a successor's.
    let identity: (dev_t, ino_t)

    init(path: String, listener: Int32, stopRead: Int32, stopWrite: Int32, identity: (dev_t, ino_t)) {
        self.identity = identity
        self.path = path
        self.listener = listener
        self.stopRead = stopRead
        self.stopWrite = stopWrite
    }

    /// The next request; nil when the awaiting task is cancelled or the server closed.
    public func next() async -> ControlRequest? { await mailbox.next() }

    /// Stops accepting and removes the socket (only this server's own file);
    /// open connections stay, so an answer can still be sent on them.
    public func stopListening() {
        stopped.withLock { stopped in
            guard !stopped else { return }
            stopped = true
            var byte: UInt8 = 1
            _ = write(stopWrite, &byte, 1)
        }
        // A supervisor of the lab's next start may have made its own socket here by now.
        var status = stat()
        if lstat(path, &status) == 0, status.st_dev == identity.0, status.st_ino == identity.1 { unlink(path) }
    }

    /// Stops accepting, closes every connection and removes the socket.
    public func close() {
        stopListening()
        mailbox.close()
        for channel in channels.withLock({ channels in defer { channels = [] }; return channels }) { channel.close() }
    }

    func acceptLoop() {
        var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0), pollfd(fd: stopRead, events: Int16(POLLIN), revents: 0)]
        defer {
            Glibc.close(listener)
            Glibc.close(stopRead)
            // close() wrote its byte first (or never will: the lock says stopped).
            stopped.withLock { stopped in
                stopped = true
                Glibc.close(stopWrite)
            }
        }
        while true {
            let ready = poll(&fds, 2, -1)
            if ready < 0 && errno == EINTR { continue }
            if ready < 0 || fds[1].revents != 0 { return }
            guard fds[0].revents != 0, let fd = try? UnixSocket.accept(listener) else { continue }
            var credentials = PeerCredentials()
            var length = socklen_t(MemoryLayout<PeerCredentials>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0, credentials.uid == geteuid() else {
                Glibc.close(fd)
                continue
            }
            guard let channel = try? MessageChannel(adopting: fd) else { continue }
            let mailbox = self.mailbox
            do {
                try channel.start { [weak self] input in
                    if case .closed = input {
                        // The client is done: free its descriptors (off the reader thread, which close() waits for).
                        Task.detached { [weak self] in
                            self?.channels.withLock { $0.removeAll { $0 === channel } }
                            channel.close()
                        }
                        return
                    }
                    guard case .message(let message) = input else { return }
                    guard let command = message["execute"]?.stringValue else {
                        try? channel.send(["error": ["class": "GenericError", "desc": "expected {\"execute\": COMMAND, \"arguments\": {...}}"]])
                        return
                    }
                    let arguments = message["arguments"]?.objectValue ?? [:]
                    mailbox.post(ControlRequest(command: command, arguments: arguments) { answer in try? channel.send(answer) })
                }
            } catch {
                channel.close()
                continue
            }
            channels.withLock { $0.append(channel) }
        }
    }

    /// Asks the supervisor of the lab whose control socket is `path`;
    /// returns the `return` object or throws with the supervisor's `desc`.
    public static func request(
        path: String, command: String, arguments: JSONObject, timeout: Duration
    ) async throws -> JSONObject {
        let fd: Int32
        do { fd = try UnixSocket.connect(path: path) } catch {
            throw LabError.supervisor("cannot reach the lab's supervisor at \(path) (\(error)); is the lab running under a supervisor of this qlab version?")
        }
        let channel = try MessageChannel(adopting: fd)
        defer { channel.close() }
        let answer = OneShot<Result<JSONObject, LabError>>()
        try channel.start { input in
            switch input {
            case .message(let message): answer.fulfil(.success(message))
            case .closed(let reason): answer.fulfil(.failure(.supervisor("the supervisor closed the control connection before answering (\(reason))")))
            case .decodingError(let error): answer.fulfil(.failure(.supervisor("the supervisor's answer did not decode: \(error)")))
            case .tick: break
            }
        }
        try channel.send(["execute": .string(command), "arguments": .object(arguments)])
        let timer = Task {
            try await Task.sleep(for: timeout)
            answer.fulfil(.failure(.supervisor("the supervisor did not answer \(command) within \(timeout)")))
        }
        defer { timer.cancel() }
        let message = try await withTaskCancellationHandler {
            try await answer.value.get()
        } onCancel: {
            answer.fulfil(.failure(.supervisor("cancelled")))
        }
        if let error = message["error"] {
            throw LabError.supervisor(error["desc"]?.stringValue ?? "the supervisor refused \(command)")
        }
        return message["return"]?.objectValue ?? [:]
    }
}

/// `struct ucred` of `SO_PEERCRED` (glibc declares it only under _GNU_SOURCE).
struct PeerCredentials {
    var pid: pid_t = 0
    var uid: uid_t = 0
    var gid: gid_t = 0
}

/// A value set once, awaited by one task.
final class OneShot<T: Sendable>: Sendable {
    struct State {
        var value: T?
        var waiter: CheckedContinuation<T, Never>?
    }
    let state = Mutex(State())

    func fulfil(_ value: T) {
        let waiter: CheckedContinuation<T, Never>? = state.withLock { s in
            guard s.value == nil else { return nil }
            s.value = value
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: value)
    }

    var value: T {
        get async {
            await withCheckedContinuation { continuation in
                let ready: T? = state.withLock { s in
                    if let value = s.value { return value }
                    s.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }
}

/// Requests waiting for the supervisor's loop: posted by connection reader
/// threads, taken one at a time. A cancelled wait leaves the queue usable.
final class ControlMailbox: Sendable {
    struct State {
        var queue: [ControlRequest] = []
        var waiter: (id: UInt64, continuation: CheckedContinuation<ControlRequest?, Never>)?
        var nextID: UInt64 = 0
        var closed = false
    }
    let state = Mutex(State())

    func post(_ request: ControlRequest) {
        let waiter: CheckedContinuation<ControlRequest?, Never>? = state.withLock { s in
            if s.closed { return nil }
            if let waiter = s.waiter {
                s.waiter = nil
                return waiter.continuation
            }
            s.queue.append(request)
            return nil
        }
        waiter?.resume(returning: request)
        if state.withLock({ $0.closed }) { request.respond(["error": ["class": "GenericError", "desc": "the supervisor is shutting down"]]) }
    }

    func close() {
        let (waiter, queued) = state.withLock { s in
            s.closed = true
            defer {
                s.waiter = nil
                s.queue = []
            }
            return (s.waiter?.continuation, s.queue)
        }
        waiter?.resume(returning: nil)
        for request in queued { request.respond(["error": ["class": "GenericError", "desc": "the supervisor is shutting down"]]) }
    }

    func next() async -> ControlRequest? {
        let id = state.withLock { s in
            s.nextID += 1
            return s.nextID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let immediate: ControlRequest?? = state.withLock { s in
                    if !s.queue.isEmpty { return .some(s.queue.removeFirst()) }
                    if s.closed || Task.isCancelled { return .some(nil) }
                    s.waiter = (id, continuation)
                    return .none
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter: CheckedContinuation<ControlRequest?, Never>? = state.withLock { s in
                guard let waiter = s.waiter, waiter.id == id else { return nil }
                s.waiter = nil
                return waiter.continuation
            }
            waiter?.resume(returning: nil)
        }
    }
}
