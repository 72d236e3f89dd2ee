/// The commands that read what a guest shows: its display and its memory.
/// QEMU writes the file itself, so `filename` must be a path QEMU can create
/// and nobody else can (qlab uses the lab's private runtime directory).
extension QMPClient {
    /// `screendump` with `format` (`png` needs QEMU 7.1+; `ppm` is older QEMU's only format):
    /// the display's current picture into `filename`.
    public func screendump(filename: String, format: String = "png", device: String? = nil) async throws {
        var arguments: JSONObject = ["filename": .string(filename), "format": .string(format)]
        if let device { arguments["device"] = .string(device) }
        _ = try await execute("screendump", arguments: arguments)
    }

    /// `pmemsave`: `size` bytes of guest-physical memory from `address` into `filename`.
    public func pmemsave(address: UInt64, size: Int, filename: String) async throws {
        _ = try await execute("pmemsave", arguments: ["val": JSONValue(Int(address)), "size": JSONValue(size), "filename": .string(filename)])
    }
}
