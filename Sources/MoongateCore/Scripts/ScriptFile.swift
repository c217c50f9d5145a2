import Foundation

/// A script's source as read from disk, and how logs name it.
struct ScriptFile: Sendable {
    /// `scripts/queue.lua`: the folder's name and the file's, short enough for every log line.
    let displayName: String
    let path: String
    /// Where relative paths given to `read_file` and friends are resolved.
    let directory: String
    let source: [UInt8]

    static func discover(in directory: String) throws -> [ScriptFile] {
        let folder = URL(fileURLWithPath: directory, isDirectory: true).standardizedFileURL
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path)
            .filter { $0.hasSuffix(".lua") && !$0.hasPrefix(".") }
            .sorted()
        return try names.map { name in
            let url = folder.appendingPathComponent(name)
            return ScriptFile(
                displayName: folder.lastPathComponent + "/" + name,
                path: url.path,
                directory: folder.path,
                source: Array(try Data(contentsOf: url))
            )
        }
    }
}
