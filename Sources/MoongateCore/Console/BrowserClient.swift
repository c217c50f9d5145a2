/// `GET /moongate.js`: the dependency-free browser client for Moongate endpoints (`moongate.js`
/// beside this file, compiled into the binary). The README documents its API;
/// Tests/acceptance/test_browser.py runs it in Chromium.
enum BrowserClient {
    static let javascript = String(decoding: PackageResources.moongate_js, as: UTF8.self)
}
