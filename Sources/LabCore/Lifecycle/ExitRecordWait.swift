import Platform

extension LabRuntime {
    /// The exit record of the boot that started at `startedAt`, waiting at
    /// most `timeout` for the supervisor to write it once it has reaped QEMU.
    /// The wait is an `inotify(7)` watch on the state dir, where the record
    /// is renamed into place; nil when none comes.
    public func exitRecord(since startedAt: Double, waiting timeout: Duration) async -> ExitRecord? {
        let watch = try? DirectoryWatch()
        watch?.add(stateDirectory)
        let deadline = ContinuousClock.now + timeout
        while true {
            if let exit = exitRecord, exit.at >= startedAt { return exit }
            let left = deadline - ContinuousClock.now
            guard left > .zero, !Task.isCancelled else { return nil }
            if let watch {
                _ = await watch.wait(timeout: left)
            } else {
                // No inotify instance to be had (the user's limit is reached): a short retry.
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }
}
