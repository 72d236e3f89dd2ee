/// The command that types on a guest's keyboard.
extension QMPClient {
    /// `send-key`: presses `qcodes` (QEMU's QKeyCode names: `ctrl`, `alt`,
    /// `a`, `esc`, `f12`, ...) together in order and releases them after
    /// `holdTime` milliseconds (QEMU's default, 100 ms, when nil). QEMU
    /// queues the events behind those of an earlier `send-key`, so keys sent
    /// one command after another arrive in order.
    public func sendKey(qcodes: [String], holdTime: Int? = nil) async throws {
        var arguments: JSONObject = ["keys": .array(qcodes.map { ["type": "qcode", "data": .string($0)] })]
        if let holdTime { arguments["hold-time"] = JSONValue(holdTime) }
        _ = try await execute("send-key", arguments: arguments)
    }
}
