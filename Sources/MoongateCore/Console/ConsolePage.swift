/// `GET /console`: the operator's page (`console.html` beside this file, compiled into the binary;
/// no CDN). It renders the snapshots `ConsoleFeedHandler` sends over `/console/live`, through
/// moongate.js. Everything a client or a script controls (session ids, error messages) is set as
/// text, never parsed as HTML.
enum ConsolePage {
    static let html = String(decoding: PackageResources.console_html, as: UTF8.self)
}
