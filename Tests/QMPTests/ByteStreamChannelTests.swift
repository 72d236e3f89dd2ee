import Foundation
import Platform
import QMP
import Synchronization
import Testing

/// The reader-thread machinery under QMP, the guest agent and the console.
@Suite("Byte-stream channel")
struct ByteStreamChannelTests {
    final class Log: Sendable {
        let bytes = Mutex<[UInt8]>([])
        let ends = Mutex<[StreamEnd]>([])
    }

    static func start(_ channel: ByteStreamChannel, _ log: Log) throws {
        try channel.start { input in
            switch input {
            case .bytes(let bytes): log.bytes.withLock { $0 += bytes }
            case .tick: break
            case .ended(let end): log.ends.withLock { $0.append(end) }
            }
            return true
        }
    }

    @Test func concurrentClosersAllReturnAfterTheEndWasDeliveredOnce() async throws {
        for _ in 0..<20 {
            let (mine, peer) = try UnixSocket.pair()
            defer { close(peer) }
            let channel = try ByteStreamChannel(adopting: mine)
            let log = Log()
            try Self.start(channel, log)
            let sawEnd = await withTaskGroup(of: Bool.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        channel.close()
                        return log.ends.withLock { !$0.isEmpty }
                    }
                }
                return await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(sawEnd == Array(repeating: true, count: 8))
            #expect(log.ends.withLock { $0 } == [.closedByOwner])
        }
    }

    @Test func bytesArriveInOrderAndThePeerClosingEndsTheStream() async throws {
        let (mine, peer) = try UnixSocket.pair()
        let channel = try ByteStreamChannel(adopting: mine)
        let log = Log()
        try Self.start(channel, log)
        let sent = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        _ = sent.withUnsafeBytes { write(peer, $0.baseAddress, $0.count) }
        close(peer)
        while log.ends.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(2)) }
        #expect(log.bytes.withLock { $0 } == sent)
        #expect(log.ends.withLock { $0 } == [.peerClosed])
        channel.close()
        #expect(log.ends.withLock { $0 } == [.peerClosed])
    }

    @Test func aWriteToAPeerThatReadsNothingStallsWithinItsTimeout() throws {
        let (mine, peer) = try UnixSocket.pair()
        defer { close(peer) }
        _ = fcntl(mine, F_SETFL, fcntl(mine, F_GETFL) | O_NONBLOCK)
        let channel = try ByteStreamChannel(adopting: mine)
        defer { channel.close() }
        let big = [UInt8](repeating: 0x41, count: 8 << 20)  // more than the socket buffers hold
        #expect(throws: StreamWriteError.stalled) {
            try big.withUnsafeBytes { try channel.write($0, timeout: .milliseconds(100)) }
        }
        channel.close()
        #expect(throws: StreamWriteError.closed) {
            try [UInt8(1)].withUnsafeBytes { try channel.write($0) }
        }
    }

    /// The async write waits for room through the reader thread's poll (POLLOUT), not on the caller's thread.
    @Test func anAsyncWriteWaitsForRoomAndStallsWithinItsTimeout() async throws {
        let (mine, peer) = try UnixSocket.pair()
        defer { close(peer) }
        _ = fcntl(mine, F_SETFL, fcntl(mine, F_GETFL) | O_NONBLOCK)
        let channel = try ByteStreamChannel(adopting: mine)
        defer { channel.close() }
        try Self.start(channel, Log())
        let big = (0..<(8 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        await #expect(throws: StreamWriteError.stalled) { try await channel.write(big, timeout: .milliseconds(200)) }

        // A peer that reads: every byte arrives, in order, after what the stalled write got through.
        let (mine2, peer2) = try UnixSocket.pair()
        _ = fcntl(mine2, F_SETFL, fcntl(mine2, F_GETFL) | O_NONBLOCK)
        let channel2 = try ByteStreamChannel(adopting: mine2)
        defer { channel2.close() }
        try Self.start(channel2, Log())
        let received = Mutex<[UInt8]>([])
        let done = Mutex(false)
        Thread {
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(peer2, &chunk, chunk.count)
                if n <= 0 { break }
                received.withLock { $0 += chunk[0..<n] }
            }
            done.withLock { $0 = true }
        }.start()
        try await channel2.write(big, timeout: .seconds(120))
        shutdown(peer2, Int32(SHUT_WR))
        channel2.close()
        while !done.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
        close(peer2)
        #expect(received.withLock { $0 } == big)
    }
}
