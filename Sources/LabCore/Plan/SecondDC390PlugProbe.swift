import Platform
import QMP

/// Asking a QEMU binary whether a second `dc390` hotplug into one process aborts it.
extension SecondDC390Plug {
    /// Plugs a `dc390`, unplugs it (a paused VM: `system_reset` completes the
    /// unplug) and plugs one again at the same PCI address, in a throw-away
    /// QEMU (`-S`, no disk, 16 MiB, TCG, QMP on stdin/stdout, about 0.1 s).
    /// QEMU answers each command before it reads the next, so the reset is
    /// done before the second plug.
    public static func probe(qemu: String = Lab.defaultQEMU) -> SecondDC390Plug {
        let argv = [
            qemu, "-nodefaults", "-display", "none", "-machine", "q35", "-accel", "tcg", "-m", "16", "-S",
            "-device", "pcie-pci-bridge,id=qlab-probe-bridge,bus=pcie.0,addr=0x5", "-qmp", "stdio",
        ]
        let plug: JSONValue = [
            "execute": "device_add",
            "arguments": ["driver": "dc390", "id": "qlab-probe", "bus": "qlab-probe-bridge", "addr": "0x1"],
        ]
        let commands: [JSONValue] = [
            ["execute": "qmp_capabilities"], ["execute": "query-version"], plug,
            ["execute": "device_del", "arguments": ["id": "qlab-probe"]], ["execute": "system_reset"],
            ["execute": "query-status"], plug, ["execute": "quit"],
        ]
        var input: [UInt8] = []
        for command in commands {
            guard let line = try? command.serialized() else { return .unknown(reason: "cannot encode the probe's QMP commands") }
            input += line + [0x0A]
        }
        let run: CapturedRun
        do {
            run = try CapturedRun.runBlocking(argv, input: input, timeout: .seconds(20))
        } catch {
            return .unknown(reason: "cannot run \(qemu): \(error)")
        }
        return interpret(run)
    }

    /// The verdict from the probe's output and exit.
    static func interpret(_ run: CapturedRun) -> SecondDC390Plug {
        var replies: [JSONValue] = []
        var version = ""
        for line in run.output.split(whereSeparator: \.isNewline) where line.hasPrefix("{") {
            guard let message = try? JSONValue.parse(String(line)), message["event"] == nil, message["QMP"] == nil else { continue }
            replies.append(message)
            if let qemu = message["return"]?["qemu"], let major = qemu["major"]?.intValue, let minor = qemu["minor"]?.intValue,
                let micro = qemu["micro"]?.intValue
            {
                let package = message["return"]?["package"]?.stringValue?.trimmingSpaces() ?? ""
                version = "\(major).\(minor).\(micro)" + (package.isEmpty ? "" : " (\(package))")
            }
        }
        if run.timedOut { return .unknown(reason: "the probe QEMU did not finish within 20 s") }
        if run.exit == .signaled(6) /* SIGABRT */ || run.output.contains("Assertion") {
            return .aborts(version: version.isEmpty ? "version unknown" : version)
        }
        // qmp_capabilities, query-version, device_add, device_del, system_reset, query-status, device_add, quit.
        if run.exit == .exited(0), replies.count == 8, replies.allSatisfy({ $0["error"] == nil }) {
            return .works(version: version)
        }
        let error = replies.compactMap { $0["error"]?["desc"]?.stringValue }.first
        return .unknown(reason: error ?? "the probe QEMU \(run.exit?.description ?? "ended with an unknown status")")
    }
}
