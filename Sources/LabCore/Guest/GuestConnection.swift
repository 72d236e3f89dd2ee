import Platform

/// How qlab talks to a guest.
public enum GuestTransport: String, Sendable, CaseIterable {
    /// The guest agent when the lab has its socket and the agent answers, else the serial console.
    case auto
    /// qemu-ga over virtio-serial (``GuestAgent``).
    case agent
    /// The serial console (``GuestConsole``).
    case console
}

/// Opens guest sessions on running labs.
public enum GuestConnection {
    /// A session with the guest of the running lab `runtime`, over `transport`.
    ///
    /// `.auto` takes the agent when its socket exists and the agent answers a
    /// sync within `agentTimeout`, else the console.
    public static func open(
        runtime: LabRuntime, transport: GuestTransport = .auto, agentTimeout: Duration = .seconds(3),
        consoleOptions: GuestConsole.Options = GuestConsole.Options()
    ) async throws -> any GuestSession {
        guard let record = try runtime.record, runtime.liveQEMU(record) != nil else { throw LabError.notRunning(runtime.name) }
        let guest = (try? record.lab()).flatMap { try? $0.selectGuest(record.guest) }
        let shell = GuestAgent.shell(for: guest?.os ?? .linux)
        switch transport {
        case .agent:
            guard FileSystem.entryExists(runtime.agentSocketPath) else {
                throw GuestError.connect("lab \(runtime.name) has no guest agent channel (\(runtime.agentSocketPath) does not exist); see docs/guest-interaction.md")
            }
            return try await GuestAgent.connect(path: runtime.agentSocketPath, shell: shell, timeout: max(agentTimeout, .seconds(10)))
        case .console:
            return try GuestConsole.connect(runtime: runtime, options: consoleOptions)
        case .auto:
            if FileSystem.entryExists(runtime.agentSocketPath),
                let agent = try? await GuestAgent.connect(path: runtime.agentSocketPath, shell: shell, timeout: agentTimeout)
            {
                return agent
            }
            return try GuestConsole.connect(runtime: runtime, options: consoleOptions)
        }
    }
}
