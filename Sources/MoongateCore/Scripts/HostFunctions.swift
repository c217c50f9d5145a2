import CLua
import Foundation
import LuaBridge
import Logging
import NIOCore
import NIOWebSocket

/// The Swift functions behind the prelude's `host` table. Each runs inside a protected call on
/// the script's loop, returns its result count, or returns `fail(...)` (-1) so that the C
/// trampoline raises the error: no Lua error ever unwinds through Swift.
enum HostFunctions {
    static func register(in lua: LuaState) {
        lua.setFunctions([
            ("send", { state in HostFunctions.run(state!, HostFunctions.send) }),
            ("close", { state in HostFunctions.run(state!, HostFunctions.close) }),
            ("broadcast", { state in HostFunctions.run(state!, HostFunctions.broadcast) }),
            ("publish", { state in HostFunctions.run(state!, HostFunctions.publish) }),
            ("conn_info", { state in HostFunctions.run(state!, HostFunctions.connectionInfo) }),
            ("log", { state in HostFunctions.run(state!, HostFunctions.log) }),
            ("timer", { state in HostFunctions.run(state!, HostFunctions.timer) }),
            ("cancel", { state in HostFunctions.run(state!, HostFunctions.cancel) }),
            ("now", { state in HostFunctions.run(state!, HostFunctions.now) }),
            ("env", { state in HostFunctions.run(state!, HostFunctions.env) }),
            ("read_file", { state in HostFunctions.run(state!, HostFunctions.readFile) }),
            ("file_mtime", { state in HostFunctions.run(state!, HostFunctions.fileModificationTime) }),
            ("read_module", { state in HostFunctions.run(state!, HostFunctions.readModule) }),
            ("emit", { state in HostFunctions.run(state!, HostFunctions.emit) }),
            ("close_session", { state in HostFunctions.run(state!, HostFunctions.closeSession) }),
            ("session_status", { state in HostFunctions.run(state!, HostFunctions.sessionStatus) }),
            ("jwt_verify", { state in HostFunctions.run(state!, HostFunctions.jwtVerify) }),
            ("cluster_node_id", { state in HostFunctions.run(state!, HostFunctions.clusterNodeID) }),
            ("cluster_nodes", { state in HostFunctions.run(state!, HostFunctions.clusterNodes) }),
            ("http_request", { state in HostFunctions.run(state!, HostFunctions.httpRequest) }),
            ("sql", { state in HostFunctions.run(state!, HostFunctions.sql) }),
            ("exec", { state in HostFunctions.run(state!, HostFunctions.exec) }),
            ("server_url", { state in HostFunctions.run(state!, HostFunctions.serverURL) }),
        ])
    }

    /// Runs a host function with the context's helpers on the calling thread's stack.
    private static func run(_ state: OpaquePointer, _ function: (ScriptContext) -> Int32) -> Int32 {
        let context = ScriptContext.current(state)
        return context.lua.onThread(state) { function(context) }
    }

    private static func fail(_ context: ScriptContext, _ message: String) -> Int32 {
        context.lua.push(message)
        return -1
    }

    /// An I/O call the host will not make (not allowed, no such database): `nil, reason` for the
    /// script, as a call that failed, and counted as refused.
    private static func refuse(_ context: ScriptContext, _ reason: String, kind: String) -> Int32 {
        context.services.metrics.scriptIO.refused(kind: kind)
        context.lua.pushNil()
        context.lua.push(reason)
        return 2
    }

    private static func payload(_ lua: LuaState, at index: Int32) -> ByteBuffer? {
        lua.withBytes(at: index) { ByteBuffer(bytes: $0) }
    }

    /// The connection id at `index`. Only numbers the host handed out name a connection; any other
    /// (negative, fractional, math.mininteger) names none, and never reaches a conversion that traps.
    private static func connectionID(_ lua: LuaState, at index: Int32) -> UInt64? {
        lua.integer(at: index).flatMap { UInt64(exactly: $0) }
    }

    /// host.send(conn_id, payload, is_binary) -> delivered
    private static func send(_ context: ScriptContext) -> Int32 {
        let lua = context.lua
        guard let id = connectionID(lua, at: 1), let payload = payload(lua, at: 2) else {
            return fail(context, "send expects a connection and a payload")
        }
        guard let connection = context.services.connections[id] else {
            lua.push(false)
            return 1
        }
        let opcode: WebSocketOpcode = lua.bool(at: 3) ? .binary : .text
        lua.push(context.batch.appendSend(WebSocketFrame(fin: true, opcode: opcode, data: payload), to: connection))
        return 1
    }

    /// host.close(conn_id, code, reason)
    private static func close(_ context: ScriptContext) -> Int32 {
        let lua = context.lua
        guard let id = connectionID(lua, at: 1), let code = lua.integer(at: 2) else {
            return fail(context, "close expects a connection and a close code")
        }
        guard CloseCode.isValidToSend(code) else {
            return fail(context, "close code \(code) is not one a server may send (1000-1003, 1007-1014, 3000-4999)")
        }
        let reason = lua.string(at: 3) ?? ""
        guard reason.utf8.count <= 123 else {
            return fail(context, "close reason is longer than 123 bytes")
        }
        if let connection = context.services.connections[id] {
            context.batch.append(.close(connection, WebSocketErrorCode(codeNumber: code), reason: reason))
        }
        return 0
    }

    /// host.broadcast(endpoint_index, payload)
    private static func broadcast(_ context: ScriptContext) -> Int32 {
        let lua = context.lua
        guard let index = lua.integer(at: 1), let payload = payload(lua, at: 2) else {
            return fail(context, "broadcast expects a message")
        }
        guard let slot = context.slot(at: index) else {
            return fail(context, "broadcast is not available while the script is loading")
        }
        let fannedOut = context.batch.appendBroadcast(.text(payload), to: [(slot, nil)], histories: .record(context.services.sessions))
        if fannedOut, let cluster = context.services.sessions.cluster {
            cluster.bus.relay(path: slot.pattern.description, text: String(buffer: payload))
        }
        return 0
    }

    /// host.publish(path, payload) -> number of endpoints it reached
    private static func publish(_ context: ScriptContext) -> Int32 {
        let lua = context.lua
        guard let path = lua.string(at: 1), let payload = payload(lua, at: 2) else {
            return fail(context, "publish expects a path and a message")
        }
        let targets = context.services.endpoints.publishTargets(for: path)
        let fannedOut = context.batch.appendBroadcast(
            .text(payload),
            to: targets.map { ($0.slot, $0.pathFilter) },
            histories: .record(context.services.sessions)
        )
        // Relayed by path, even when no endpoint here matches it: another host's scripts may.
        if fannedOut || targets.isEmpty, let cluster = context.services.sessions.cluster {
            cluster.bus.relay(path: path, text: String(buffer: payload))
        }
        lua.push(targets.count)
        return 1
    }

    /// host.conn_info(conn_id, key): params, query, headers, path or remote; nil once gone.
    private static func connectionInfo(_ context: ScriptContext) -> Int32 {
        let lua = context.lua
        guard let id = connectionID(lua, at: 1), let key = lua.string(at: 2) else {
            return fail(context, "conn_info expects a connection and a key")
        }
        guard let connection = context.services.connections[id] ?? context.departed[id] else {
            lua.pushNil()
            return 1
        }
        switch key {
        case "params": lua.push(connection.params)
        case "query": lua.push(connection.query)
        case "headers": lua.push(connection.headers)
        case "path": lua.push(connection.path)
        case "remote": lua.push(connection.remoteAddress)
        case "auth": lua.push(connection.auth)
        default: lua.pushNil()
        }
        return 1
    }

    /// host.log(level, message, where)
    private static func log(_ context: ScriptContext) -> Int32 {
        let lua = context.lua
        let levels: [Logger.Level] = [.debug, .info, .warning, .error]
        let level = levels[min(max(lua.integer(at: 1) ?? 1, 0), levels.count - 1)]
        let message = lua.string(at: 2) ?? ""
        let location = lua.string(at: 3) ?? context.file.displayName
        // The logger already names the script: the line is enough, unless a module logged.
        let inScript = context.file.displayName + ":"
        let metadata: Logger.Metadata =
            location.hasPrefix(inScript) ? ["line": "\(location.dropFirst(inScript.count))"] : ["at": "\(location)"]
        context.logger.log(level: level, "\(message)", metadata: metadata)
        return 0
    }

    /// host.timer(timer_id, seconds, repeats)
    private static func timer(_ context: ScriptContext) -> Int32 {
        let lua = context.lua
        guard let id = lua.integer(at: 1), let seconds = lua.number(at: 2) else {
            return fail(context, "timer expects an id and seconds")
        }
        context.startTimer(id: id, seconds: seconds, repeats: lua.bool(at: 3))
        return 0
    }

    /// host.cancel(timer_id)
    private static func cancel(_ context: ScriptContext) -> Int32 {
        if let id = context.lua.integer(at: 1) {
            context.timers.removeValue(forKey: id)?.cancel()
            context.pendingTimers.removeAll { $0.id == id }
        }
        return 0
    }

    /// host.now(): seconds since the Unix epoch, with sub-second precision.
    private static func now(_ context: ScriptContext) -> Int32 {
        context.lua.push(Date().timeIntervalSince1970)
        return 1
    }

    /// host.env(name)
    private static func env(_ context: ScriptContext) -> Int32 {
        guard let name = context.lua.string(at: 1) else {
            return fail(context, "env expects a variable name")
        }
        context.lua.push(getenv(name).map { String(cString: $0) })
        return 1
    }

    /// host.read_file(path)
    private static func readFile(_ context: ScriptContext) -> Int32 {
        guard let requested = context.lua.string(at: 1) else {
            return fail(context, "read_file expects a path")
        }
        guard let path = context.readablePath(requested) else {
            return fail(context, "read_file: \(requested) is outside the readable directories")
        }
        // Refused before it is read: a file the memory cap cannot hold would only be copied to fail.
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        guard size < context.lua.memoryAvailable else {
            return fail(context, "read_file: \(requested) is \(size) bytes, more than the script's memory cap (--lua-memory) leaves: not enough memory")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            return fail(context, "read_file: cannot read \(requested)")
        }
        data.withUnsafeBytes { context.lua.push(bytes: $0) }
        return 1
    }

    /// host.read_module(name) -> source, chunk name; or nil, why. `util.time` is `lib/util/time.lua`
    /// in the script's folder; the name allows no way out of `lib/`.
    private static func readModule(_ context: ScriptContext) -> Int32 {
        guard let name = context.lua.string(at: 1) else {
            return fail(context, "require expects a module name")
        }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard !parts.isEmpty, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") } })
        else {
            context.lua.pushNil()
            context.lua.push(#"require: '\#(name)' is not a module name (letters, digits and _, parts joined by dots, as in "util.time")"#)
            return 2
        }
        let relative = "lib/" + parts.joined(separator: "/") + ".lua"
        let folder = context.file.displayName.split(separator: "/").dropLast().joined(separator: "/")
        let chunkName = folder.isEmpty ? relative : folder + "/" + relative
        guard let source = FileManager.default.contents(atPath: context.file.directory + "/" + relative) else {
            context.lua.pushNil()
            context.lua.push("module '\(name)' not found: no \(chunkName)")
            return 2
        }
        source.withUnsafeBytes { context.lua.push(bytes: $0) }
        context.lua.push(chunkName)
        // What the script's version is made of, for the reload plan: only what its top level
        // required (later requires come too late to matter), once per module.
        if context.isLoading {
            context.moduleSources[chunkName] = Array(source)
        }
        return 2
    }

    /// host.file_mtime(path): modification time in seconds, or nil if there is no such file.
    private static func fileModificationTime(_ context: ScriptContext) -> Int32 {
        guard let requested = context.lua.string(at: 1) else {
            return fail(context, "file_mtime expects a path")
        }
        guard let path = context.readablePath(requested) else {
            return fail(context, "file_mtime: \(requested) is outside the readable directories")
        }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        let modified = attributes?[.modificationDate] as? Date
        if let modified {
            context.lua.push(modified.timeIntervalSince1970)
        } else {
            context.lua.pushNil()
        }
        return 1
    }

    /// host.emit(session_id, event_json, endpoint_index?) -> seq; or nil and an operation id to
    /// wait on, for the commit to a cluster's log from a callback that can wait.
    private static func emit(_ context: ScriptContext) -> Int32 {
        let lua = context.lua
        guard let id = lua.string(at: 1), let event = payload(lua, at: 2) else {
            return fail(context, "emit expects a session id and an event")
        }
        let settings = lua.integer(at: 3).flatMap { index in
            index >= 1 && index <= context.specs.count ? context.specs[index - 1].session : nil
        }
        let sessions = context.services.sessions
        if let cluster = sessions.cluster, context.canWait, !lua.bool(at: 4) {
            let type: String?
            switch SessionStore.eventType(of: event) {
            case .success(let found): type = found
            case .failure(let error): return fail(context, "emit: \(error)")
            }
            return self.waitInstead(context, kind: "emit", what: "emit into \(id)", function: "emit") {
                do {
                    let committed = try await sessions.commit(into: id, object: event, type: type, settings: settings, cluster: cluster, on: cluster.loop).get()
                    return OperationResult(values: [.integer(Int(committed.seq))], outcome: "ok")
                } catch {
                    return .failure("emit: \(error as? SessionError ?? .unavailable("\(error)"))")
                }
            }
        }
        switch sessions.emit(into: id, object: event, settings: settings) {
        case .success(let seq):
            lua.push(Int(seq))
            return 1
        case .failure(let error):
            return fail(context, "emit: \(error)")
        }
    }

    /// host.close_session(session_id)
    private static func closeSession(_ context: ScriptContext) -> Int32 {
        guard let id = context.lua.string(at: 1) else {
            return fail(context, "close_session expects a session id")
        }
        context.services.sessions.close(id)
        return 0
    }

    /// host.session_status(session_id) -> JSON text, or nil if there is no such session; or nil
    /// and an operation id to wait on, for a cluster's log read from a callback that can wait.
    private static func sessionStatus(_ context: ScriptContext) -> Int32 {
        guard let id = context.lua.string(at: 1) else {
            return fail(context, "session_status expects a session id")
        }
        let sessions = context.services.sessions
        if let cluster = sessions.cluster, sessions.existing(id) == nil, context.canWait, !context.lua.bool(at: 2) {
            return self.waitInstead(context, kind: "session", what: "session_status of \(id)", function: "session_status") {
                do {
                    let status = try await sessions.lookup(id, on: cluster.loop).get()?.status
                    return OperationResult(values: [status.map { .text($0.json) } ?? .nil], outcome: "ok")
                } catch {
                    return .failure("session_status: \(error as? SessionError ?? .unavailable("\(error)"))")
                }
            }
        }
        context.lua.push(sessions.statusAndWait(id)?.json)
        return 1
    }

    /// host.cluster_node_id() -> this host's node id, or nil on a host alone
    private static func clusterNodeID(_ context: ScriptContext) -> Int32 {
        context.lua.push(context.services.sessions.cluster?.nodes.id)
        return 1
    }

    /// host.cluster_nodes() -> JSON array of the nodes the last heartbeat saw (on a host alone: [])
    private static func clusterNodes(_ context: ScriptContext) -> Int32 {
        let nodes = context.services.sessions.cluster?.nodes.latest ?? []
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        context.lua.push((try? String(decoding: encoder.encode(nodes), as: UTF8.self)) ?? "[]")
        return 1
    }

    /// host.jwt_verify(token, audience, issuer) -> operation id to wait for (claims JSON, or nil and why)
    private static func jwtVerify(_ context: ScriptContext) -> Int32 {
        let lua = context.lua
        guard let token = lua.string(at: 1) else {
            return fail(context, "jwt.verify expects a token")
        }
        let audience = lua.string(at: 2)
        let issuer = lua.string(at: 3)
        let tokens = context.services.outbound.tokens
        return self.startOperation(context, kind: "jwt", what: "jwt.verify", function: "jwt.verify") {
            await tokens.verify(token, audience: audience, issuer: issuer)
        }
    }

    /// host.http_request(method, url, headers, body, timeout) -> operation id to wait for
    private static func httpRequest(_ context: ScriptContext) -> Int32 {
        let lua = context.lua
        guard let method = lua.string(at: 1)?.uppercased(), let url = lua.string(at: 2) else {
            return fail(context, "http.request expects a method and a url")
        }
        guard !method.isEmpty, method.allSatisfy({ $0.isASCII && $0.isLetter }) else {
            return fail(context, "http.request: \(method) is not an HTTP method")
        }
        var headers: [(String, String)] = []
        if lua.type(at: 3) == .table {
            lua.forEachEntry(ofTableAt: 3) { name in
                if let name, let value = lua.string(at: -1) ?? lua.number(at: -1).map({ $0.formatted }) {
                    headers.append((name, value))
                }
            }
        }
        let call = HTTPCall(
            method: method,
            url: url,
            headers: headers,
            body: lua.withBytes(at: 4) { Array($0) },
            timeout: .interval(lua.number(at: 5) ?? HTTPCall.defaultTimeout)
        )
        let outbound = context.services.outbound
        return self.startOperation(context, kind: "http", what: "http.request \(method) \(url)", function: "http.request") {
            await call.perform(with: outbound)
        }
    }

    /// host.sql(kind, database, sql, parameters...) -> operation id; `kind` is "query" or "exec".
    private static func sql(_ context: ScriptContext) -> Int32 {
        let lua = context.lua
        guard let kind = lua.string(at: 1), let name = lua.string(at: 2), let statement = lua.string(at: 3) else {
            return fail(context, "sql expects a database name and an SQL statement")
        }
        let function = "sql.\(kind)"
        guard let database = context.services.outbound.databases.byName[name] else {
            return refuse(context, ScriptDatabases.unknown(name), kind: "sql")
        }
        var parameters: [LuaValue] = []
        if lua.top >= 4 {
            for index in 4...lua.top {
                guard let value = lua.scalar(at: index) else {
                    return fail(context, "\(function): parameter \(index - 3) is a \(lua.typeName(at: index)); pass a string, number, boolean, nil or json.null (json.encode a table)")
                }
                parameters.append(value)
            }
        }
        let counting = kind == "exec"
        let bound = parameters
        return self.startOperation(context, kind: "sql", what: "\(function) on \(name)", function: function) {
            counting ? await database.exec(statement, bound) : await database.query(statement, bound)
        }
    }

    /// host.exec(program, args, stdin, timeout) -> operation id (or raises when not allowed)
    private static func exec(_ context: ScriptContext) -> Int32 {
        let lua = context.lua
        guard let requested = lua.string(at: 1) else {
            return fail(context, "exec expects a program")
        }
        let program: String
        switch context.services.outbound.policy.program(requested) {
        case .success(let allowed): program = allowed
        case .failure(let refusal): return refuse(context, refusal.description, kind: "exec")
        }
        var arguments: [String] = []
        if lua.type(at: 2) == .table {
            for position in stride(from: 1, through: lua.rawLength(at: 2), by: 1) {
                let argument: String? = lua.withElement(position, ofTableAt: 2) {
                    lua.string(at: -1) ?? lua.number(at: -1).map { lua.integer(at: -1).map(String.init) ?? $0.formatted }
                }
                guard let argument else {
                    return fail(context, "exec: argument \(position) must be a string or a number")
                }
                arguments.append(argument)
            }
        }
        let call = CommandCall(
            program: program,
            arguments: arguments,
            stdin: lua.withBytes(at: 3) { Array($0) },
            timeout: lua.number(at: 4) ?? CommandCall.defaultTimeout,
            directory: context.file.directory
        )
        return self.startOperation(context, kind: "exec", what: "exec \(program)", function: "exec") {
            await call.perform()
        }
    }

    /// host.server_url() -> "http://127.0.0.1:PORT" of this host's listener, or nil before it listens
    private static func serverURL(_ context: ScriptContext) -> Int32 {
        context.lua.push(context.services.outbound.ownURL)
        return 1
    }

    /// For a function that answers at once where it can and waits where it must (`emit`,
    /// `session_status`): `nil` and the operation's id, which the prelude then waits on.
    private static func waitInstead(
        _ context: ScriptContext,
        kind: String,
        what: String,
        function: String,
        _ work: @escaping @Sendable () async -> OperationResult
    ) -> Int32 {
        context.lua.pushNil()
        let pushed = self.startOperation(context, kind: kind, what: what, function: function, work)
        return pushed < 0 ? pushed : 2
    }

    /// Starts `work` for the running callback and pushes its id for the prelude to wait on.
    private static func startOperation(
        _ context: ScriptContext,
        kind: String,
        what: String,
        function: String,
        _ work: @escaping @Sendable () async -> OperationResult
    ) -> Int32 {
        switch context.startOperation(kind: kind, what: what, work) {
        case .success(let id):
            context.lua.push(id)
            return 1
        case .failure(let refusal):
            return fail(context, refusal.message(function))
        }
    }
}
