#if canImport(Glibc)
import Glibc
#endif

/// `poll(2)` event bits.
public struct PollEvents: OptionSet, Sendable, Hashable {
    public let rawValue: Int16
    public init(rawValue: Int16) { self.rawValue = rawValue }
    public static let readable = PollEvents(rawValue: Int16(POLLIN))
    public static let writable = PollEvents(rawValue: Int16(POLLOUT))
    public static let error = PollEvents(rawValue: Int16(POLLERR))
    public static let hangUp = PollEvents(rawValue: Int16(POLLHUP))
    public static let invalid = PollEvents(rawValue: Int16(POLLNVAL))
}

/// The descriptors one `poll(2)` watches. Kept between calls, so a loop
/// that polls the same descriptors allocates nothing per turn.
public struct PollSet {
    private var entries: [pollfd]

    public init(_ descriptors: [(FileDescriptor, PollEvents)]) {
        entries = descriptors.map { pollfd(fd: $0.0.rawValue, events: $0.1.rawValue, revents: 0) }
    }

    /// Sets the descriptor and events of entry `index`, clearing what it returned.
    public mutating func set(_ index: Int, _ descriptor: FileDescriptor, _ events: PollEvents) {
        entries[index] = pollfd(fd: descriptor.rawValue, events: events.rawValue, revents: 0)
    }

    /// What entry `index` returned from the last wait.
    public func returned(_ index: Int) -> PollEvents { PollEvents(rawValue: entries[index].revents) }

    /// One `poll(2)`, at most `milliseconds` (-1: no limit; 0: do not block):
    /// the number of ready descriptors, 0 on timeout. Not retried: an
    /// `EINTR` is returned, so a caller with a deadline recomputes its timeout.
    public mutating func waitOnce(milliseconds: Int32) -> Result<Int, Errno> {
        let count = entries.count
        let ready = entries.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t(count), milliseconds) }
        return ready < 0 ? .failure(.current) : .success(Int(ready))
    }

    /// `poll(2)` until a descriptor is ready or `deadline` passes (nil: no
    /// limit); an interruption recomputes the time left. The ready count, 0 on timeout.
    public mutating func wait(until deadline: ContinuousClock.Instant?) -> Result<Int, Errno> {
        while true {
            let milliseconds = deadline.map { OffPoolWait.milliseconds($0 - ContinuousClock.now) } ?? -1
            let result = waitOnce(milliseconds: milliseconds)
            if case .failure(.interrupted) = result { continue }
            return result
        }
    }

    /// Whether `descriptor` has hung up or failed now (`POLLHUP`/`POLLERR`
    /// from a `poll(2)` that waits for nothing else and does not block): the
    /// write end of a pipe whose reader has gone, a socket shut down by its peer.
    public static func hungUp(_ descriptor: FileDescriptor) -> Bool {
        var set = PollSet([(descriptor, [])])
        guard case .success(let ready) = set.waitOnce(milliseconds: 0), ready > 0 else { return false }
        return !set.returned(0).intersection([.hangUp, .error]).isEmpty
    }

    /// Whether `descriptor` becomes readable (or hung up) within `timeout`
    /// (nil: as long as it takes); a blocking `poll(2)` on the calling thread.
    public static func readable(_ descriptor: FileDescriptor, within timeout: Duration?) -> Bool {
        var set = PollSet([(descriptor, .readable)])
        let ready = set.wait(until: timeout.map { ContinuousClock.now + $0 })
        return (try? ready.get()).map { $0 > 0 } ?? false
    }
}
