import ArgumentParser

struct QMPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "qmp", abstract: "Execute one QMP command.")
    func run() async throws {}
}
