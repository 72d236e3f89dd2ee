#if canImport(Glibc)
import Glibc
#endif

/// Copies between this process's terminal (standard input and output) and
/// a connected socket, the terminal in raw mode while attached: a serial
/// console. Ends when either side ends, on `detachByte` typed at a terminal,
/// or when the awaiting task is cancelled. The copying blocks in `poll(2)`
/// on a detached thread (``OffPoolWait``), never on the cooperative pool.
public enum TerminalRelay {
    /// Ctrl-].
    public static let controlBracket: UInt8 = 0x1D

    public static func run(socket: FileDescriptor, detachByte: UInt8 = controlBracket) async throws(SystemCallError) {
        let input = FileDescriptor.standardInput
        let output = FileDescriptor.standardOutput
        let isTerminal = isatty(input.rawValue) == 1
        // tcgetattr(3)/cfmakeraw(3)/tcsetattr(3): raw while attached, restored after.
        var saved = termios()
        if isTerminal {
            tcgetattr(input.rawValue, &saved)
            var raw = saved
            cfmakeraw(&raw)
            tcsetattr(input.rawValue, TCSANOW, &raw)
        }
        defer { if isTerminal { tcsetattr(input.rawValue, TCSANOW, &saved) } }
        try await OffPoolWait.run { cancelFD in
            copy(input: input, output: output, socket: socket, cancel: FileDescriptor(rawValue: cancelFD), detachByte: isTerminal ? detachByte : nil)
        }
    }

    private static func copy(input: FileDescriptor, output: FileDescriptor, socket: FileDescriptor, cancel: FileDescriptor, detachByte: UInt8?) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var fds = PollSet([(input, .readable), (socket, .readable), (cancel, .readable)])
        while true {
            guard case .success = fds.wait(until: nil), fds.returned(2).isEmpty else { return }
            if !fds.returned(0).isEmpty {
                guard case .success(let n) = buffer.withUnsafeMutableBytes({ input.readSome(into: $0) }), n > 0 else { return }
                if let detachByte, buffer[0..<n].contains(detachByte) { return }
                // Every byte, however short each write(2) is.
                guard (try? socket.writeEvery(buffer[0..<n], what: "the console socket")) != nil else { return }
            }
            if !fds.returned(1).isEmpty {
                guard case .success(let n) = buffer.withUnsafeMutableBytes({ socket.readSome(into: $0) }), n > 0 else { return }
                guard (try? output.writeEvery(buffer[0..<n], what: "standard output")) != nil else { return }
            }
        }
    }
}
