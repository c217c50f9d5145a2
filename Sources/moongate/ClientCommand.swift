import ArgumentParser
import Foundation
import MoongateClient
import WebSocketClient

struct ClientCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "Talk to an endpoint: print what arrives, send each line typed on stdin as a text message.",
        discussion: """
            Acks are marked ✓, close codes and reconnects are reported on stderr. With --resume the client
            reconnects after a drop with the last_seq and epoch it has seen, so a session or history
            endpoint replays what it missed. Ends when stdin does (closing with 1000).
            """
    )

    @Argument(help: "Endpoint, e.g. ws://127.0.0.1:8080/ws/progress/demo")
    var url: String

    @Flag(name: .long, help: "Reconnect automatically after a drop, resuming with last_seq.")
    var resume = false

    @Flag(name: .long, help: "One message per line exactly as received (default when stdout is not a terminal).")
    var json = false

    @Flag(name: .long, help: "Offer permessage-deflate (and use it if the server agrees).")
    var compression = false

    func run() async throws {
        var target = try WebSocketTarget(url: self.url, allowRemote: true)
        target.compression = self.compression
        let options = InteractiveClient.Options(resume: self.resume, jsonLines: self.json, pretty: isatty(STDOUT_FILENO) != 0)
        try await InteractiveClient(target: target, options: options).run()
    }
}
