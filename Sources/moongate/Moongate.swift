import ArgumentParser

@main
struct Moongate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moongate",
        abstract: "Serve WebSocket endpoints defined by Lua scripts.",
        discussion: """
            With no subcommand, `moongate` serves the scripts in ./scripts on 127.0.0.1:8080.
            SIGHUP reloads the scripts without dropping a connection; SIGTERM or SIGINT closes every
            client with 1001 and exits.
            """,
        subcommands: [ServeCommand.self, CheckCommand.self, BenchCommand.self, ClientCommand.self],
        defaultSubcommand: ServeCommand.self
    )
}
