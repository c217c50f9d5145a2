public import LuaBridge
import NIOCore

/// Loads a folder of scripts into fresh runtimes, all or nothing: any file that fails to compile,
/// fails at load, or declares an invalid or duplicate endpoint fails the whole set.
enum ScriptLoader {
    static func load(
        directory: String,
        loops: ScriptLoops,
        services: HostServices
    ) async -> Result<[ScriptRuntime], ScriptLoadFailure> {
        let files: [ScriptFile]
        do {
            files = try ScriptFile.discover(in: directory)
        } catch {
            return .failure(ScriptLoadFailure(errors: [
                ScriptError(kind: .unreadable, script: directory, line: nil, message: "cannot read the scripts folder: \(error)")
            ]))
        }
        if files.isEmpty {
            return .failure(ScriptLoadFailure(errors: [
                ScriptError(kind: .definition, script: directory, line: nil, message: "no *.lua scripts in this folder")
            ]))
        }

        var runtimes: [ScriptRuntime] = []
        var errors: [ScriptError] = []
        let futures = files.map { ScriptRuntime.load($0, on: loops.loop(for: $0), services: services) }
        for future in futures {
            do {
                runtimes.append(try await future.get())
            } catch let error as ScriptError {
                errors.append(error)
            } catch {
                errors.append(ScriptError(kind: .runtime, script: directory, line: nil, message: "\(error)"))
            }
        }
        errors += Self.duplicatePaths(in: runtimes)
        guard errors.isEmpty else {
            for runtime in runtimes {
                do {
                    try await runtime.retire().get()
                } catch {
                    services.logger.warning("could not free the state of \(runtime.file.displayName): \(error)")
                }
            }
            return .failure(ScriptLoadFailure(errors: errors))
        }
        return .success(runtimes)
    }

    private static func duplicatePaths(in runtimes: [ScriptRuntime]) -> [ScriptError] {
        var seen: [String: EndpointSpec] = [:]
        var errors: [ScriptError] = []
        for spec in runtimes.flatMap(\.specs) {
            let shape = PathPattern(spec.path).shape
            if let first = seen[shape] {
                let (script, line) = Self.split(spec.where)
                errors.append(
                    ScriptError(
                        kind: .definition,
                        script: script,
                        line: line,
                        message: "endpoint \(spec.path) is already declared at \(first.where) (as \(first.path))"
                    )
                )
            } else {
                seen[shape] = spec
            }
        }
        return errors
    }

    /// `scripts/a.lua:12` into its file and line.
    static func split(_ location: String) -> (script: String, line: Int?) {
        guard let colon = location.lastIndex(of: ":"), let line = Int(location[location.index(after: colon)...]) else {
            return (location, nil)
        }
        return (String(location[..<colon]), line)
    }
}

/// Every error found while loading a set of scripts.
public struct ScriptLoadFailure: Error, Sendable, CustomStringConvertible {
    public let errors: [ScriptError]

    public var description: String {
        self.errors.map(\.description).joined(separator: "\n")
    }
}
