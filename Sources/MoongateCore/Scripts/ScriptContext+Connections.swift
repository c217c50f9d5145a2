import LuaBridge
import NIOCore
import NIOWebSocket

/// A script's side of its clients' lives: authorization, the initial payload, messages, closing.
extension ScriptContext {

    func authorize(_ request: AuthorizationRequest, index: Int) -> AuthorizationDecision {
        do {
            try self.call(.authorize, results: 4) { lua in
                lua.push(index)
                lua.push(request.path)
                lua.push(request.params)
                lua.push(request.query)
                lua.push(request.headers)
                lua.push(request.remoteAddress)
                return 6
            }
            defer { self.lua.pop(4) }
            if self.lua.bool(at: -4) {
                return .allow(auth: self.lua.string(at: -1))
            }
            return .denied(status: self.lua.integer(at: -3), reason: self.lua.string(at: -2))
        } catch {
            self.report(error, while: "authorizing a handshake (denied)", endpoint: index, connection: nil)
            return .denied(status: 403, reason: "authorization failed")
        }
    }

    func open(_ connection: Connection, index: Int) {
        var initial: WebSocketFrame?
        do {
            try self.call(.open, results: 1) { lua in
                lua.push(index)
                lua.push(Int(connection.id))
                return 2
            }
            initial = self.lua.withBytes(at: -1) { WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: $0)) }
            self.lua.pop()
            if initial == nil, self.specs[index - 1].watchEvery != nil, let snapshot = connection.slot.snapshot {
                initial = .text(snapshot)
            }
        } catch {
            self.report(error, while: "computing the initial payload", endpoint: index, connection: connection)
            initial = .text(MessageRouting.error("initial payload failed"))
        }
        self.batch.append(.join(connection, initial: initial))
        self.batch.flush()
    }

    func receive(_ messages: [InboundMessage], from connection: Connection, index: Int) {
        for message in messages {
            switch message {
            case .text(let buffer, let id):
                self.handleText(buffer, id: id, from: connection, index: index)
            case .binary(let buffer):
                self.handleBinary(buffer, from: connection, index: index)
            }
        }
        self.batch.append(.completed(connection))
        self.batch.flush()
    }

    private func handleText(_ buffer: ByteBuffer, id: String?, from connection: Connection, index: Int) {
        do {
            try self.call(.text, results: 1) { lua in
                lua.push(index)
                lua.push(Int(connection.id))
                buffer.withUnsafeReadableBytes { lua.push(bytes: $0) }
                lua.push(id)
                return 4
            }
            if let reply = self.lua.withBytes(at: -1, { ByteBuffer(bytes: $0) }) {
                self.batch.append(.send(connection, WebSocketFrame(fin: true, opcode: .text, data: reply)))
                connection.slot.metrics.countKind(of: reply)
            }
            self.lua.pop()
        } catch {
            connection.slot.metrics.errorReplies.increment()
            let type = self.failedMessageType()
            let what = type.map { "handling a \"\($0)\" message" } ?? "handling a message"
            self.report(error, while: what, endpoint: index, connection: connection)
            let text = error.kind == .budget ? "handler ran too long" : "handler failed"
            self.batch.append(.send(connection, .text(MessageRouting.error(text, id: id))))
        }
    }

    private func handleBinary(_ buffer: ByteBuffer, from connection: Connection, index: Int) {
        do {
            try self.call(.binary, results: 2) { lua in
                lua.push(index)
                lua.push(Int(connection.id))
                buffer.withUnsafeReadableBytes { lua.push(bytes: $0) }
                return 3
            }
            let isBinary = self.lua.bool(at: -1)
            if let reply = self.lua.withBytes(at: -2, { ByteBuffer(bytes: $0) }) {
                let frame = WebSocketFrame(fin: true, opcode: isBinary ? .binary : .text, data: reply)
                self.batch.append(.send(connection, frame))
            }
            self.lua.pop(2)
        } catch {
            self.report(error, while: "handling a binary message", endpoint: index, connection: connection)
            self.batch.append(.send(connection, .text(MessageRouting.error("handler failed"))))
        }
    }

    private func failedMessageType() -> String? {
        do {
            try self.call(.failedMessage, results: 1) { _ in 0 }
            defer { self.lua.pop() }
            return self.lua.string(at: -1)
        } catch {
            return nil
        }
    }

    func closed(_ connection: Connection, index: Int, code: WebSocketErrorCode?) {
        do {
            try self.call(.close, results: 0) { lua in
                lua.push(index)
                lua.push(Int(connection.id))
                if let code {
                    lua.push(Int(UInt16(webSocketErrorCode: code)))
                } else {
                    lua.pushNil()
                }
                return 3
            }
        } catch {
            self.report(error, while: "running on_close", endpoint: index, connection: connection)
        }
        self.batch.flush()
    }
}
