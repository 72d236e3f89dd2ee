import Platform

/// Standard output as qlab's commands use it.
public enum StandardOutput {
    /// Line-buffers C's `stdout` (`setvbuf(3)` with `_IOLBF`), so every complete
    /// line reaches a pipe or file at once, as it does on a terminal. Call it
    /// first thing, before anything is printed.
    public static func useLineBuffering() {
        ThisProcess.lineBufferStandardOutput()
    }
}
