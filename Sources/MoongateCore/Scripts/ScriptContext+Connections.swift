import LuaBridge
import NIOCore
import NIOWebSocket

/// What a client sent while one of its callbacks waited on I/O. Its next message waits for the
/// previous handler, so replies keep their order; other clients are not held.
enum ConnectionWork {
    /// The rest of one batch the I/O loop delivered; finishing it completes that batch.
    case messages(ArraySlice<InboundMessage>, index: Int)
    case close(code: WebSocketErrorCode?, index: Int)
}

/// A script's side of its clients' lives: authorization, the initial payload, messages, closing.
/// Each callback may wait on I/O (ScriptContext+Waiting); what the same client sends meanwhile
/// waits in its backlog.
extension ScriptContext {

    func authorize(_ request: AuthorizationRequest, index: Int, answer: @escaping (AuthorizationDecision) -> Void) {
        let readDecision = { [unowned self] () -> AuthorizationDecision in
            defer { self.lua.pop(4) }
            if self.lua.bool(at: -4) {
                return .allow(auth: self.lua.string(at: -1))
            }
            return .denied(status: self.lua.integer(at: -3), reason: self.lua.string(at: -2))
        }
        let failed = { [unowned self] (error: ScriptError) -> AuthorizationDecision in
            if error.kind == .cancelled {
                return .deny(status: 503, reason: "the endpoint is reloading: try again")
            }
            self.report(error, while: "authorizing a handshake (denied)", endpoint: index, connection: nil)
            return .denied(status: 403, reason: "authorization failed")
        }
        do {
            let outcome = try self.invoke(.authorize, results: 4) { lua in
                lua.push(index)
                lua.push(request.path)
                lua.push(request.params)
                lua.push(request.query)
                lua.push(request.headers)
                lua.push(request.remoteAddress)
                return 6
            }
            switch outcome {
            case .finished:
                answer(readDecision())
            case .waiting(let callback):
                callback.finish = { result in
                    switch result {
                    case .success: answer(readDecision())
                    case .failure(let error): answer(failed(error))
                    }
                }
            }
        } catch {
            answer(failed(error))
        }
    }

    func open(_ connection: Connection, index: Int) {
        do {
            let outcome = try self.invoke(.open, results: 1) { lua in
                lua.push(index)
                lua.push(Int(connection.id))
                return 2
            }
            switch outcome {
            case .finished:
                self.join(connection, index: index, initial: self.popInitial(connection, index: index))
            case .waiting(let callback):
                self.backlogs[connection.id] = []
                callback.finish = { [unowned self] result in
                    switch result {
                    case .success:
                        self.join(connection, index: index, initial: self.popInitial(connection, index: index))
                    case .failure(let error) where error.kind == .cancelled:
                        // The new version of the script computes the initial payload instead.
                        if !self.handOver(connection, { $0.connect(connection) }) {
                            self.join(connection, index: index, initial: .text(MessageRouting.error("the endpoint is stopping")))
                        }
                    case .failure(let error):
                        self.initialFailed(error, connection: connection, index: index)
                    }
                    self.drainBacklog(of: connection)
                }
            }
        } catch {
            self.initialFailed(error, connection: connection, index: index)
        }
    }

    private func popInitial(_ connection: Connection, index: Int) -> WebSocketFrame? {
        var initial = self.lua.withBytes(at: -1) { WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: $0)) }
        self.lua.pop()
        if initial == nil, self.specs[index - 1].watchEvery != nil, let snapshot = connection.slot.snapshot {
            initial = .text(snapshot)
        }
        return initial
    }

    private func initialFailed(_ error: ScriptError, connection: Connection, index: Int) {
        self.report(error, while: "computing the initial payload", endpoint: index, connection: connection)
        self.join(connection, index: index, initial: .text(MessageRouting.error("initial payload failed")))
    }

    private func join(_ connection: Connection, index: Int, initial: WebSocketFrame?) {
        self.batch.append(.join(connection, initial: initial))
        self.batch.flush()
    }

    func receive(_ messages: [InboundMessage], from connection: Connection, index: Int) {
        let work = ConnectionWork.messages(messages[...], index: index)
        if self.backlogs[connection.id] != nil {
            self.backlogs[connection.id]!.append(work)
        } else {
            _ = self.perform(work, for: connection)
            self.batch.flush()
        }
    }

    func closed(_ connection: Connection, index: Int, code: WebSocketErrorCode?) {
        self.departed[connection.id] = connection
        let work = ConnectionWork.close(code: code, index: index)
        if self.backlogs[connection.id] != nil {
            self.backlogs[connection.id]!.append(work)
        } else {
            _ = self.perform(work, for: connection)
            self.batch.flush()
        }
    }

    /// Runs `work` for a client none of whose callbacks waits. Returns false if one now waits:
    /// the rest of `work` is then at the front of the client's backlog.
    private func perform(_ work: ConnectionWork, for connection: Connection) -> Bool {
        switch work {
        case .messages(var messages, let index):
            while let message = messages.popFirst() {
                let finished: Bool
                switch message {
                case .text(let buffer, let id): finished = self.handleText(buffer, id: id, from: connection, index: index)
                case .binary(let buffer): finished = self.handleBinary(buffer, from: connection, index: index)
                }
                if !finished {
                    self.backlogs[connection.id, default: []].insert(.messages(messages, index: index), at: 0)
                    return false
                }
            }
            self.batch.append(.completed(connection))
            return true
        case .close(let code, let index):
            return self.runClose(connection, index: index, code: code)
        }
    }

    /// A client's waiting callback finished: what it sent meanwhile runs now, in order, until
    /// another callback waits. A retiring script hands it to the new version instead.
    private func drainBacklog(of connection: Connection) {
        while let work = self.backlogs[connection.id]?.first {
            self.backlogs[connection.id]!.removeFirst()
            if self.isStopping {
                self.handOver(work, of: connection)
            } else if !self.perform(work, for: connection) {
                self.batch.flush()
                return
            }
        }
        self.backlogs[connection.id] = nil
        self.batch.flush()
    }

    private func handOver(_ work: ConnectionWork, of connection: Connection) {
        switch work {
        case .messages(let messages, _):
            if !self.handOver(connection, { $0.deliver(Array(messages), from: connection) }) {
                self.batch.append(.completed(connection))
            }
        case .close(let code, let index):
            if self.handOver(connection, { $0.disconnect(connection, code: code) }) {
                self.departed[connection.id] = nil
            } else {
                _ = self.runClose(connection, index: index, code: code)
            }
        }
    }

    /// Gives the client's work to the runtime that now serves its endpoint; false if none does.
    private func handOver(_ connection: Connection, _ body: (ScriptRuntime) -> Void) -> Bool {
        guard let successor = connection.slot.binding?.runtime, successor !== self.runtime else { return false }
        body(successor)
        return true
    }

    // MARK: Messages

    /// Returns false if the handler waits on I/O (its reply follows when it finishes).
    private func handleText(_ buffer: ByteBuffer, id: String?, from connection: Connection, index: Int) -> Bool {
        do {
            let outcome = try self.invoke(.text, results: 1) { lua in
                lua.push(index)
                lua.push(Int(connection.id))
                buffer.withUnsafeReadableBytes { lua.push(bytes: $0) }
                lua.push(id)
                return 4
            }
            switch outcome {
            case .finished:
                self.popTextReply(to: connection)
                return true
            case .waiting(let callback):
                callback.finish = { [unowned self] result in
                    switch result {
                    case .success: self.popTextReply(to: connection)
                    case .failure(let error): self.handlerFailed(error, message: buffer, id: id, connection: connection, index: index)
                    }
                    self.drainBacklog(of: connection)
                }
                return false
            }
        } catch {
            self.handlerFailed(error, message: buffer, id: id, connection: connection, index: index)
            return true
        }
    }

    private func popTextReply(to connection: Connection) {
        if let reply = self.lua.withBytes(at: -1, { ByteBuffer(bytes: $0) }) {
            self.batch.append(.send(connection, WebSocketFrame(fin: true, opcode: .text, data: reply)))
            connection.slot.metrics.countKind(of: reply)
        }
        self.lua.pop()
    }

    private func handlerFailed(_ error: ScriptError, message: ByteBuffer?, id: String?, connection: Connection, index: Int) {
        connection.slot.metrics.errorReplies.increment()
        let text: String
        switch error.kind {
        case .budget: text = "handler ran too long"
        case .timeout: text = "handler timed out"
        case .cancelled: text = "handler cancelled: the script was reloaded or stopped"
        default: text = "handler failed"
        }
        if error.kind != .cancelled {
            let type = message.flatMap(Self.messageType(of:))
            let what = type.map { "handling a \"\($0)\" message" } ?? "handling a message"
            self.report(error, while: what, endpoint: index, connection: connection)
        }
        self.batch.append(.send(connection, .text(MessageRouting.error(text, id: id))))
    }

    /// The message's top-level `"type"`, for the log line of a handler that failed.
    private static func messageType(of message: ByteBuffer) -> String? {
        message.withUnsafeReadableBytes { bytes in
            guard case .object(let envelope) = JSONEnvelope.scan(bytes), case .string(let type) = envelope.type else { return nil }
            return type
        }
    }

    private func handleBinary(_ buffer: ByteBuffer, from connection: Connection, index: Int) -> Bool {
        do {
            let outcome = try self.invoke(.binary, results: 2) { lua in
                lua.push(index)
                lua.push(Int(connection.id))
                buffer.withUnsafeReadableBytes { lua.push(bytes: $0) }
                return 3
            }
            switch outcome {
            case .finished:
                self.popBinaryReply(to: connection)
                return true
            case .waiting(let callback):
                callback.finish = { [unowned self] result in
                    switch result {
                    case .success: self.popBinaryReply(to: connection)
                    case .failure(let error): self.handlerFailed(error, message: nil, id: nil, connection: connection, index: index)
                    }
                    self.drainBacklog(of: connection)
                }
                return false
            }
        } catch {
            self.handlerFailed(error, message: nil, id: nil, connection: connection, index: index)
            return true
        }
    }

    private func popBinaryReply(to connection: Connection) {
        let isBinary = self.lua.bool(at: -1)
        if let reply = self.lua.withBytes(at: -2, { ByteBuffer(bytes: $0) }) {
            self.batch.append(.send(connection, WebSocketFrame(fin: true, opcode: isBinary ? .binary : .text, data: reply)))
        }
        self.lua.pop(2)
    }

    // MARK: Closing

    /// Runs `on_close`; false if it waits on I/O.
    private func runClose(_ connection: Connection, index: Int, code: WebSocketErrorCode?) -> Bool {
        let failed = { [unowned self] (error: ScriptError) in
            if error.kind != .cancelled {
                self.report(error, while: "running on_close", endpoint: index, connection: connection)
            }
        }
        do {
            let outcome = try self.invoke(.close, results: 0) { lua in
                lua.push(index)
                lua.push(Int(connection.id))
                if let code {
                    lua.push(Int(UInt16(webSocketErrorCode: code)))
                } else {
                    lua.pushNil()
                }
                return 3
            }
            guard case .waiting(let callback) = outcome else {
                self.departed[connection.id] = nil
                return true
            }
            if self.backlogs[connection.id] == nil {
                self.backlogs[connection.id] = []
            }
            callback.finish = { [unowned self] result in
                if case .failure(let error) = result {
                    failed(error)
                }
                self.departed[connection.id] = nil
                self.drainBacklog(of: connection)
            }
            return false
        } catch {
            failed(error)
            self.departed[connection.id] = nil
            return true
        }
    }
}
