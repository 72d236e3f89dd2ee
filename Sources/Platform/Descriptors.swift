#if canImport(Glibc)
import Glibc
#endif

/// What qlab does with descriptors beyond swift-system's `FileDescriptor`
/// (whose `read`, `write`, `writeAll`, `closeAfter` and `close` it uses as they are).
extension FileDescriptor {
    /// `pipe2(2)` with `O_CLOEXEC` (and `O_NONBLOCK` on both ends when asked):
    /// no child spawned meanwhile on another thread inherits either end.
    public static func pipeCloseOnExec(nonBlocking: Bool = false) throws(SystemCallError) -> (readEnd: FileDescriptor, writeEnd: FileDescriptor) {
        // swift-system's pipe(options:) is pipe2(2) (Glibc's module does not declare it).
        do throws(Errno) {
            return try pipe(options: nonBlocking ? [.closeOnExec, .nonBlocking] : .closeOnExec)
        } catch {
            throw SystemCallError("pipe2", error)
        }
    }

    /// `close(2)` once, its error dropped: for cleanup, where nothing is to
    /// be done about a failed close (and Linux has released the number even
    /// on `EINTR`, so it is never retried). Descriptors whose close can lose
    /// data (a file just written) use swift-system's throwing `close()`.
    public func closeIgnoringErrors() {
        _ = Glibc.close(rawValue)
    }

    /// `fcntl(F_SETFD)`: whether the descriptor is closed on `exec`.
    public func setCloseOnExec(_ closeOnExec: Bool) {
        _ = fcntl(rawValue, F_SETFD, closeOnExec ? FD_CLOEXEC : 0)
    }

    /// `fcntl(F_SETFL, flags | O_NONBLOCK)`.
    public func setNonBlocking() {
        _ = fcntl(rawValue, F_SETFL, fcntl(rawValue, F_GETFL) | O_NONBLOCK)
    }

    /// One `read(2)` into `buffer` (retried on `EINTR`): the count read, 0 at end of file.
    public func readSome(into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
        let count = retryOnInterrupt { Glibc.read(rawValue, buffer.baseAddress, buffer.count) }
        return count < 0 ? .failure(.current) : .success(count)
    }

    /// One `write(2)` of `buffer` (retried on `EINTR`): the count written, which may be short.
    public func writeSome(_ buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> {
        let count = retryOnInterrupt { Glibc.write(rawValue, buffer.baseAddress, buffer.count) }
        return count < 0 ? .failure(.current) : .success(count)
    }

    /// `write(2)` until every byte is written (a short write goes on from
    /// where it stopped; `EINTR` retried): swift-system's `writeAll`, with
    /// the error typed and naming `what`.
    public func writeEvery<Bytes: Sequence<UInt8>>(_ bytes: Bytes, what: @autoclosure () -> String) throws(SystemCallError) {
        do {
            _ = try writeAll(bytes)
        } catch let error as Errno {
            throw SystemCallError("write \(what())", errno: error.rawValue)
        } catch {
            throw SystemCallError("write \(what())", errno: EIO)
        }
    }

    /// `read(2)` until end of file or `limit` bytes; nil on a read error.
    public func readAll(limit: Int) -> [UInt8]? {
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while result.count < limit {
            let wanted = min(buffer.count, limit - result.count)
            let read = buffer.withUnsafeMutableBytes { readSome(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<wanted])) }
            guard case .success(let count) = read else { return nil }
            if count == 0 { break }
            result.append(contentsOf: buffer[0..<count])
        }
        return result
    }

    /// `send(2)` with `MSG_NOSIGNAL` (a peer that went away is an `EPIPE`,
    /// not a SIGPIPE), `MSG_DONTWAIT` when `dontWait`; `write(2)` when the
    /// descriptor is not a socket. Retried on `EINTR`; may be short.
    public func send(_ buffer: UnsafeRawBufferPointer, dontWait: Bool = false) -> Result<Int, Errno> {
        let flags = Int32(MSG_NOSIGNAL) | (dontWait ? Int32(MSG_DONTWAIT) : 0)
        var count = retryOnInterrupt { Glibc.send(rawValue, buffer.baseAddress, buffer.count, flags) }
        if count < 0 && errno == ENOTSOCK { count = retryOnInterrupt { Glibc.write(rawValue, buffer.baseAddress, buffer.count) } }
        return count < 0 ? .failure(.current) : .success(count)
    }

    /// `shutdown(2)` of both directions: a reader blocked on the socket sees end of file.
    public func shutdownReadWrite() {
        _ = shutdown(rawValue, Int32(SHUT_RDWR))
    }
}

extension Errno {
    /// `EAGAIN`/`EWOULDBLOCK`: a non-blocking descriptor has no room or no data now.
    public var isWouldBlock: Bool { rawValue == Glibc.EAGAIN || rawValue == Glibc.EWOULDBLOCK }
}

extension SystemCallError {
    /// The error of `operation` that failed with `errno`.
    public init(_ operation: String, _ errno: Errno) {
        self.init(operation, errno: errno.rawValue)
    }

    /// The error of `operation` from one of swift-system's throwing calls
    /// (which throw `Errno`; anything else is reported as `EIO`).
    public init(_ operation: String, thrown error: any Error) {
        self.init(operation, errno: (error as? Errno)?.rawValue ?? EIO)
    }

    /// `errno` as swift-system's type.
    public var code: Errno { Errno(rawValue: errno) }
}
