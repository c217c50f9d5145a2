import Logging
import NIOCore

/// Reloading: the scripts (all or nothing) and the TLS certificate, swapped in without dropping
/// a connection.
extension MoongateServer {
    /// Compiles every script into fresh states; if all succeed, swaps them in without dropping a
    /// connection, else logs each error and keeps serving the old set unchanged.
    public func reload() async -> Result<ReloadSummary, ScriptLoadFailure> {
        let started = NIODeadline.now()
        self.reloadTLS()
        let loaded = await ScriptLoader.load(
            directory: self.configuration.scriptsDirectory,
            loops: self.scriptLoops,
            services: self.services
        )
        switch loaded {
        case .failure(let failure):
            self.metrics.count("moongate_reloads_total", [("result", "failed")])
            for error in failure.errors {
                self.logger.error("\(error)", metadata: ["kind": "\(error.kind.rawValue)"])
            }
            self.logger.error("reload failed: still serving the previous scripts", metadata: ["errors": "\(failure.errors.count)"])
            self.activity.recordReload(ok: false, summary: "still serving the previous scripts", errors: failure.errors)
            return .failure(failure)
        case .success(let runtimes):
            var summary = await self.install(runtimes)
            let elapsed = NIODeadline.now() - started
            summary.milliseconds = Int(elapsed.nanoseconds / 1_000_000)
            self.metrics.count("moongate_reloads_total", [("result", "ok")])
            self.metrics.reloadDuration.recordNanoseconds(elapsed.nanoseconds)
            self.logger.info("reloaded scripts: \(summary)")
            self.activity.recordReload(ok: true, summary: summary.description)
            return .success(summary)
        }
    }

    /// Reads the certificate and key again; if they do not load, the current ones stay in use.
    func reloadTLS() {
        guard let files = self.configuration.tlsFiles else { return }
        do {
            let context = try files.makeContext()
            self.tlsContext.withLockedValue { $0 = context }
            self.logger.info("TLS certificate reloaded", metadata: ["certificate": "\(files.certificatePath)"])
        } catch {
            self.logger.error("TLS certificate reload failed, keeping the previous one: \(error)")
        }
    }

    // MARK: Swapping script sets

    /// Serves `runtimes` from now on: the reload plan decides which slots they keep; new slots
    /// are made, kept ones rebound, removed ones emptied (their clients get 1001), and the
    /// previous runtimes retired after the work already queued for them.
    func install(_ runtimes: [ScriptRuntime]) async -> ReloadSummary {
        let current = self.endpoints.all.map { slot in
            let binding = slot.binding
            return ReloadPlan<EndpointSlot, EndpointSpec>.Current(
                slot: slot,
                pattern: slot.pattern,
                definition: binding?.spec,
                source: binding?.runtime.loadedSource
            )
        }
        let declared = runtimes.map { runtime in
            runtime.specs.map { ReloadPlan<EndpointSlot, EndpointSpec>.Declared(path: $0.path, definition: $0, source: runtime.loadedSource) }
        }
        let plan = ReloadPlan(current: current, declared: declared)
        var newSlots: [EndpointSlot] = []
        var rebinds: [(EndpointSlot, EndpointBinding)] = []
        for (runtime, placements) in zip(runtimes, plan.placements) {
            var slots: [EndpointSlot] = []
            for (offset, (spec, placement)) in zip(runtime.specs, placements).enumerated() {
                let binding = EndpointBinding(runtime: runtime, index: offset + 1, spec: spec)
                let slot: EndpointSlot
                switch placement {
                case .keep(let existing, _):
                    slot = existing
                    rebinds.append((existing, binding))
                case .add(let pattern):
                    let metrics = self.metrics.endpoint(spec.path)
                    slot = EndpointSlot(
                        pattern: pattern,
                        fanout: Fanout(loops: self.services.ioLoops, metrics: metrics),
                        binding: binding,
                        metrics: metrics
                    )
                }
                slot.adoptHistory(spec.history)
                if let cluster = self.sessions.cluster {
                    if let history = slot.history {
                        slot.history = await self.sessions.clusterHistory(for: history, cluster: cluster, on: self.ioGroup.next())
                    }
                    // A host that starts after the leader's watcher changed gets its latest value.
                    if spec.watchLeader, slot.snapshot == nil {
                        slot.snapshot = await cluster.bus.snapshot(of: slot.pattern.description)
                    }
                }
                slots.append(slot)
            }
            newSlots += slots
            do {
                try await runtime.activate(slots: slots).get()
            } catch {
                self.logger.error("could not start the timers and watchers of \(runtime.file.path): \(error)")
            }
        }
        self.endpoints.replace(with: newSlots)
        self.sessions.defaultSettings.withLockedValue { defaults in
            defaults = runtimes.lazy.flatMap(\.specs).compactMap(\.session).first ?? SessionSettings()
        }

        for slot in plan.removed {
            slot.binding = nil
        }
        let removedIDs = Set(plan.removed.map(ObjectIdentifier.init))
        for connection in self.connections.all where removedIDs.contains(ObjectIdentifier(connection.slot)) {
            connection.close(code: .goingAway, reason: "endpoint removed")
        }

        let retired = self.state.withLockedValue { state in
            defer { state.runtimes = runtimes }
            return state.runtimes
        }
        for runtime in retired {
            do {
                // Rebound in the same turn of the script loop that cancels the old version's
                // waits and hands their clients' backlogs over: what a client sent before the
                // swap reaches the new version before anything it sends after.
                let moving = rebinds.filter { $0.0.binding?.runtime === runtime }
                try await runtime.retire(rebinding: moving).get()
            } catch {
                self.logger.error("could not retire the previous state of \(runtime.file.path): \(error)")
            }
        }
        for (slot, binding) in rebinds where slot.binding?.runtime !== binding.runtime {
            slot.binding = binding  // its old runtime was not among the retired (none, on a first start)
        }
        await self.scriptLoops.release(keeping: Set(runtimes.map(\.file.path)))
        return plan.summary
    }
}
