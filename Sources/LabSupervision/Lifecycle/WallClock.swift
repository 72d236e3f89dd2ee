import Platform

/// Seconds since the epoch, from `clock_gettime(CLOCK_REALTIME)` (``UTCTime/now()``).
public func wallClockSeconds() -> Double { UTCTime.now() }
