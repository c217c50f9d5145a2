public import Logging

/// Checks a folder of scripts the way `moongate check` does: each in a fresh state, nothing served.
public func checkScripts(
    directory: String,
    limits: ScriptLimits = ScriptLimits(),
    logger: Logger
) async -> Result<[EndpointSpec], ScriptLoadFailure> {
    let loops = ScriptLoops()
    let result = await ScriptLoader.load(directory: directory, loops: loops, services: .offline(limits: limits, logger: logger))
    defer { Task { await loops.release(keeping: []) } }
    switch result {
    case .success(let runtimes):
        for runtime in runtimes {
            do {
                try await runtime.retire().get()
            } catch {
                logger.warning("could not free the state of \(runtime.file.path): \(error)")
            }
        }
        return .success(runtimes.flatMap(\.specs))
    case .failure(let failure):
        return .failure(failure)
    }
}
