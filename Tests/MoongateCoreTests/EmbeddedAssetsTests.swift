import Foundation
import XCTest

@testable import MoongateCore

/// The prelude, the console page and moongate.js are compiled in from their files, byte for byte.
final class EmbeddedAssetsTests: XCTestCase {
    private func sourceFile(_ path: String) throws -> Data {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try Data(contentsOf: root.appendingPathComponent("Sources/MoongateCore").appendingPathComponent(path))
    }

    func testEachAssetIsItsFile() throws {
        XCTAssertEqual(Data(Prelude.source), try self.sourceFile("Scripts/prelude.lua"))
        XCTAssertEqual(Data(ConsolePage.html.utf8), try self.sourceFile("Console/console.html"))
        XCTAssertEqual(Data(BrowserClient.javascript.utf8), try self.sourceFile("Console/moongate.js"))
        XCTAssertEqual(Prelude.chunkName, "moongate/prelude.lua")
    }
}
