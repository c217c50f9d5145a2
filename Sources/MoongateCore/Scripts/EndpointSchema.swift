import LuaBridge

/// The fields, defaults and validation of `endpoint { ... }`, in one place: the definition table
/// is read straight from the script's Lua state (as Redis's `function_lua.c` reads named
/// arguments), not through a JSON round trip.
enum EndpointSchema {
    enum Kind: String {
        case string, table, function, number, boolean, any
    }

    static let fields: [String: Kind] = [
        "path": .string, "initial": .any, "watch": .table, "on": .table, "on_text": .function,
        "on_binary": .function, "on_open": .function, "on_close": .function, "keepalive": .table,
        "heartbeat": .table, "max_message_size": .number, "session": .table, "authorize": .function,
        "origins": .table, "history": .table, "compression": .boolean,
    ]
    static let historyFields: Set<String> = ["size", "max_bytes", "max_age"]
    static let watchFields: Set<String> = ["every", "poll", "leader"]
    static let keepaliveFields: Set<String> = ["ping_every", "timeout"]
    static let heartbeatFields: Set<String> = ["every", "message"]
    static let sessionFields: [String: Kind] = [
        "param": .string, "history": .number, "max_bytes": .number, "max_age": .number, "retain": .number,
        "closes_on": .table, "resume_wait": .number,
    ]

    /// Bounds of every interval a script sets (watch.every, heartbeat.every, keepalive's, and the
    /// prelude's every/after): a watcher at 1e-12 s would poll flat out, and 1e19 s traps where
    /// seconds become nanoseconds.
    static let minimumInterval: Double = 0.01
    static let maximumInterval = ServerConfiguration.maximumSeconds
    static let maximumMessageSize = ServerConfiguration.maximumMessageSize
    /// Ages and retention may be long, but not so long that the cluster's SQL intervals overflow.
    static let maximumAge: Double = 1e9

    static let defaultPingEvery: Double = 20
    static let defaultPingTimeout: Double = 10
    static let defaultHistorySize = 100

    /// What is wrong with a definition, and the field it is about (`["on", "x"]` for `on.x`),
    /// so the error can name the line that sets it.
    struct Violation: Error, Equatable {
        var message: String
        var field: [String]
    }

    /// Reads the definition table at `index` (`where` is the `file:line` of its `endpoint` call).
    static func read(_ lua: LuaState, definitionAt index: Int32, where location: String) throws(Violation) -> EndpointSpec {
        let reader = DefinitionReader(lua: lua, table: lua.absoluteIndex(index))
        return try reader.spec(where: location)
    }
}

/// One definition table on the stack, read field by field; every read leaves the stack as it was.
private struct DefinitionReader {
    typealias Violation = EndpointSchema.Violation
    let lua: LuaState
    let table: Int32

    func spec(where location: String) throws(Violation) -> EndpointSpec {
        try self.checkFieldTypes()
        let path = try self.path()
        let initial = self.lua.withField("initial", ofTableAt: self.table) { self.lua.type(at: -1) }
        guard [.nil, .function, .table, .string].contains(initial) else {
            throw Violation(message: "'initial' must be a function, a table or a string", field: ["initial"])
        }
        let watch = try self.watch()
        let watchEvery = watch?.every
        let handlerTypes = try self.handlers()
        let keepalive = try self.keepalive()
        let heartbeatEvery = try self.heartbeat()
        let maxMessageSize = try self.maxMessageSize()
        let origins = try self.origins()
        let history = try self.history()
        let session = try self.session()
        if let session {
            let parameters = PathPattern(path).parameterNames
            guard parameters.isEmpty || parameters.contains(session.param) else {
                let listed = parameters.map { ":" + $0 }.joined(separator: ", ")
                throw Violation(
                    message: "'session.param' is '\(session.param)', which is not a parameter of the path \(path) (\(listed))"
                        + Self.suggestion(for: session.param, among: parameters),
                    field: session.param == SessionSettings().param ? ["session"] : ["session", "param"]
                )
            }
        }
        let has = { (field: String) in self.lua.withField(field, ofTableAt: self.table) { self.lua.type(at: -1) != .nil } }
        return EndpointSpec(
            path: path,
            where: location,
            initial: initial != .nil,
            // Opening runs no script code: no on_open, no watcher snapshot, and an initial payload
            // that is absent or a string (a table may change between clients, so it is encoded each time).
            fixedOpen: !has("on_open") && watchEvery == nil && (initial == .nil || initial == .string),
            initialText: try self.text("initial", what: "'initial'"),
            watchEvery: watchEvery,
            handlerTypes: handlerTypes,
            onText: has("on_text"),
            onBinary: has("on_binary"),
            pingEvery: keepalive.pingEvery,
            pingTimeout: keepalive.timeout,
            heartbeatEvery: heartbeatEvery,
            maxMessageSize: maxMessageSize,
            session: session,
            history: history,
            authorize: has("authorize"),
            origins: origins,
            watchLeader: watch?.leader ?? false,
            compression: self.lua.withField("compression", ofTableAt: self.table) { self.lua.type(at: -1) == .nil || self.lua.bool(at: -1) }
        )
    }

    // MARK: Fields

    private func checkFieldTypes() throws(Violation) {
        var violation: Violation?
        self.lua.forEachEntry(ofTableAt: self.table) { key in
            guard violation == nil else { return }
            let name = key ?? self.lua.describe(at: -2)
            guard let key, let expected = EndpointSchema.fields[key] else {
                violation = Violation(message: "unknown field '\(name)'" + Self.suggestion(for: name, among: EndpointSchema.fields.keys), field: [name])
                return
            }
            let actual = self.lua.typeName(at: -1)
            if expected != .any, actual != expected.rawValue {
                violation = Violation(message: "field '\(key)' must be a \(expected.rawValue), got \(actual)", field: [key])
            }
        }
        if let violation { throw violation }
    }

    private func path() throws(Violation) -> String {
        guard let path = try self.text("path", what: "'path'"), path.hasPrefix("/") else {
            throw Violation(message: "'path' must be a string starting with '/'", field: ["path"])
        }
        // Lua's %s: space, \t, \n, \v, \f, \r.
        guard !path.unicodeScalars.contains(where: { "?# \t\n\u{0B}\u{0C}\r".unicodeScalars.contains($0) }) else {
            throw Violation(message: "'path' must not contain '?', '#' or spaces", field: ["path"])
        }
        return path
    }

    private func watch() throws(Violation) -> (every: Double, leader: Bool)? {
        try self.withTable("watch") { () throws(Violation) -> (every: Double, leader: Bool) in
            try self.checkKnownFields(of: "watch", EndpointSchema.watchFields)
            let every = try self.interval("every", of: "watch")
            guard self.type(of: "poll") == .function else {
                throw Violation(message: "'watch.poll' must be a function", field: ["watch", "poll"])
            }
            let leader = self.type(of: "leader")
            guard leader == .nil || leader == .boolean else {
                throw Violation(message: "'watch.leader' must be true or false", field: ["watch", "leader"])
            }
            return (every, leader == .boolean && self.lua.withField("leader", ofTableAt: -1) { self.lua.bool(at: -1) })
        }
    }

    private func handlers() throws(Violation) -> [String] {
        try self.withTable("on") { () throws(Violation) -> [String] in
            var types: [String] = []
            var violation: Violation?
            self.lua.forEachEntry(ofTableAt: -1) { key in
                guard violation == nil else { return }
                guard let key else {
                    violation = Violation(message: "keys of 'on' must be message types (strings)", field: ["on"])
                    return
                }
                guard self.lua.type(at: -1) == .function else {
                    violation = Violation(message: "'on.\(key)' must be a function", field: ["on", key])
                    return
                }
                types.append(key)
            }
            if let violation { throw violation }
            return types.sorted()
        } ?? []
    }

    private func keepalive() throws(Violation) -> (pingEvery: Double, timeout: Double) {
        try self.withTable("keepalive") { () throws(Violation) -> (Double, Double) in
            try self.checkKnownFields(of: "keepalive", EndpointSchema.keepaliveFields)
            var pingEvery: Double?
            if self.number("ping_every") == 0 {
                pingEvery = 0
            } else if self.type(of: "ping_every") != .nil {
                pingEvery = try self.interval("ping_every", of: "keepalive", zeroDisables: true)
            }
            var timeout: Double?
            if self.type(of: "timeout") != .nil {
                timeout = try self.interval("timeout", of: "keepalive")
            }
            return (pingEvery ?? EndpointSchema.defaultPingEvery, timeout ?? EndpointSchema.defaultPingTimeout)
        } ?? (EndpointSchema.defaultPingEvery, EndpointSchema.defaultPingTimeout)
    }

    private func heartbeat() throws(Violation) -> Double? {
        try self.withTable("heartbeat") { () throws(Violation) -> Double in
            try self.checkKnownFields(of: "heartbeat", EndpointSchema.heartbeatFields)
            let every = try self.interval("every", of: "heartbeat")
            guard [.nil, .table, .string, .function].contains(self.type(of: "message")) else {
                throw Violation(message: "'heartbeat.message' must be a table, a string or a function", field: ["heartbeat", "message"])
            }
            return every
        }
    }

    private func maxMessageSize() throws(Violation) -> Int? {
        let (type, size) = self.lua.withField("max_message_size", ofTableAt: self.table) {
            (self.lua.type(at: -1), Self.finite(self.lua.number(at: -1)))
        }
        guard type != .nil else { return nil }
        guard let size, Self.isWhole(size), size <= Double(EndpointSchema.maximumMessageSize) else {
            throw Violation(
                message: "'max_message_size' must be a whole number of bytes from 1 to \(EndpointSchema.maximumMessageSize) (1 GiB)",
                field: ["max_message_size"]
            )
        }
        return Int(size)
    }

    /// Nil: the host's `--allowed-origin` setting; an empty list: no browser page at all.
    private func origins() throws(Violation) -> [String]? {
        try self.withTable("origins") { () throws(Violation) -> [String] in
            try self.strings(
                Violation(message: #"'origins' must list origins such as "https://example.com" (or "*")"#, field: ["origins"])
            )
        }
    }

    private func history() throws(Violation) -> SessionSettings? {
        try self.withTable("history") { () throws(Violation) -> SessionSettings in
            if self.lua.withField("session", ofTableAt: self.table, { self.lua.type(at: -1) }) != .nil {
                throw Violation(message: "'history' and 'session' do not mix: a session endpoint keeps its own history", field: ["history"])
            }
            var violation: Violation?
            self.lua.forEachEntry(ofTableAt: -1) { key in
                guard violation == nil else { return }
                guard let key, EndpointSchema.historyFields.contains(key) else {
                    let name = key ?? self.lua.describe(at: -2)
                    violation = Violation(
                        message: "unknown field 'history.\(name)'" + Self.suggestion(for: name, among: EndpointSchema.historyFields),
                        field: ["history", name]
                    )
                    return
                }
                guard let value = Self.finite(self.lua.number(at: -1)), value > 0 else {
                    violation = Violation(message: "'history.\(key)' must be a number > 0", field: ["history", key])
                    return
                }
                if key != "max_age", !Self.isWhole(value) {
                    violation = Violation(message: "'history.\(key)' must be a whole number >= 1", field: ["history", key])
                } else if key == "max_age", value > EndpointSchema.maximumAge {
                    violation = Violation(message: "'history.max_age' must be at most \(Int(EndpointSchema.maximumAge)) seconds", field: ["history", key])
                }
            }
            if let violation { throw violation }
            var settings = SessionSettings()
            settings.history = self.number("size").map { Int($0) } ?? EndpointSchema.defaultHistorySize
            settings.maxBytes = self.number("max_bytes").map { Int($0) } ?? settings.maxBytes
            settings.maxAge = self.number("max_age") ?? settings.maxAge
            // A history never closes and has nothing to wait for: a client resumes with last_seq or not at all.
            settings.closesOn = []
            settings.resumeWait = 0
            return settings
        }
    }

    private func session() throws(Violation) -> SessionSettings? {
        try self.withTable("session") { () throws(Violation) -> SessionSettings in
            var violation: Violation?
            self.lua.forEachEntry(ofTableAt: -1) { key in
                guard violation == nil else { return }
                guard let key, let expected = EndpointSchema.sessionFields[key] else {
                    let name = key ?? self.lua.describe(at: -2)
                    violation = Violation(
                        message: "unknown field 'session.\(name)'" + Self.suggestion(for: name, among: EndpointSchema.sessionFields.keys),
                        field: ["session", name]
                    )
                    return
                }
                if self.lua.typeName(at: -1) != expected.rawValue {
                    violation = Violation(message: "field 'session.\(key)' must be a \(expected.rawValue)", field: ["session", key])
                } else if expected == .number, Self.finite(self.lua.number(at: -1)) == nil {
                    violation = Violation(message: "field 'session.\(key)' must be a finite number", field: ["session", key])
                }
            }
            if let violation { throw violation }
            var settings = SessionSettings()
            for key in ["history", "max_bytes"] {
                guard let value = self.number(key) else { continue }
                guard Self.isWhole(value) else {
                    throw Violation(message: "'session.\(key)' must be a whole number >= 1", field: ["session", key])
                }
            }
            for key in ["max_age", "retain", "resume_wait"] {
                let longest = key == "resume_wait" ? EndpointSchema.maximumInterval : EndpointSchema.maximumAge
                if let value = self.number(key), value < 0 || value > longest {
                    throw Violation(message: "'session.\(key)' must be a number of seconds from 0 to \(Int(longest))", field: ["session", key])
                }
            }
            settings.param = self.lua.withField("param", ofTableAt: -1) { self.lua.string(at: -1) } ?? settings.param
            settings.history = self.number("history").map { Int($0) } ?? settings.history
            settings.maxBytes = self.number("max_bytes").map { Int($0) } ?? settings.maxBytes
            settings.maxAge = self.number("max_age") ?? settings.maxAge
            settings.retain = self.number("retain") ?? settings.retain
            settings.resumeWait = self.number("resume_wait") ?? settings.resumeWait
            if self.type(of: "closes_on") == .table {
                self.lua.pushRawField("closes_on", ofTableAt: -1)
                defer { self.lua.pop() }
                settings.closesOn = try self.strings(
                    Violation(message: "'session.closes_on' must list event types (strings)", field: ["session", "closes_on"])
                )
            }
            return settings
        }
    }

    // MARK: Reading

    /// Every key of the table on top of the stack (the definition's field `table`) is in `known`.
    private func checkKnownFields(of table: String, _ known: Set<String>) throws(Violation) {
        var violation: Violation?
        self.lua.forEachEntry(ofTableAt: -1) { key in
            guard violation == nil, key.map(known.contains) != true else { return }
            let name = key ?? self.lua.describe(at: -2)
            violation = Violation(message: "unknown field '\(table).\(name)'" + Self.suggestion(for: name, among: known), field: [table, name])
        }
        if let violation { throw violation }
    }

    /// "; did you mean leader?" when a known name is a typo or two away from `name`.
    static func suggestion<Names: Sequence<String>>(for name: String, among known: Names) -> String {
        let typed = name.lowercased()
        let scored = known.map { ($0, Self.editDistance(typed, $0)) }.filter { known, distance in
            distance <= max(1, min(2, typed.count / 2)) || (min(typed.count, known.count) >= 3 && (typed.contains(known) || known.contains(typed)))
        }
        guard let best = scored.min(by: { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }) else { return "" }
        return "; did you mean \(best.0)?"
    }

    /// Levenshtein distance, for suggestions.
    private static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8)
        let b = Array(b.utf8)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var current = [i + 1] + Array(repeating: 0, count: b.count)
            for (j, y) in b.enumerated() {
                current[j + 1] = min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }

    /// Runs `body` with the definition's table field `name` on top of the stack; nil if absent.
    private func withTable<Result>(_ name: String, _ body: () throws(Violation) -> Result) throws(Violation) -> Result? {
        self.lua.pushRawField(name, ofTableAt: self.table)
        defer { self.lua.pop() }
        guard self.lua.type(at: -1) == .table else { return nil }
        return try body()
    }

    /// Field `name` of the table on top of the stack.
    private func type(of name: String) -> LuaState.ValueType {
        self.lua.withField(name, ofTableAt: -1) { self.lua.type(at: -1) }
    }

    /// Field `name` of the table on top of the stack, if it is a finite number: infinity and NaN
    /// are no number of seconds or bytes (and would trap where they become a `TimeAmount`).
    private func number(_ name: String) -> Double? {
        self.lua.withField(name, ofTableAt: -1) { Self.finite(self.lua.number(at: -1)) }
    }

    /// Field `name` of the table `table` (on top of the stack) as a number of seconds within the
    /// interval bounds.
    private func interval(_ name: String, of table: String, zeroDisables: Bool = false) throws(Violation) -> Double {
        guard let seconds = self.number(name),
            seconds >= EndpointSchema.minimumInterval, seconds <= EndpointSchema.maximumInterval
        else {
            let bounds = "from \(EndpointSchema.minimumInterval) to \(Int(EndpointSchema.maximumInterval))"
            throw Violation(
                message: "'\(table).\(name)' must be a number of seconds \(bounds)\(zeroDisables ? " (0 disables it)" : "")",
                field: [table, name]
            )
        }
        return seconds
    }

    private static func finite(_ value: Double?) -> Double? {
        value.flatMap { $0.isFinite ? $0 : nil }
    }

    /// A whole number >= 1 that fits an `Int` with room to spare.
    private static func isWhole(_ value: Double) -> Bool {
        value >= 1 && value.rounded() == value && value < 0x1p62
    }

    /// The definition's field `name` if it is a string (nil otherwise), which must be UTF-8: it
    /// ends up in paths and text frames.
    private func text(_ name: String, what: String) throws(Violation) -> String? {
        let text: String?? = self.lua.withField(name, ofTableAt: self.table) {
            self.lua.withBytes(at: -1) { String(validating: $0, as: UTF8.self) }
        }
        guard let text else { return nil }
        guard let text else { throw Violation(message: "\(what) must be valid UTF-8", field: [name]) }
        return text
    }

    /// The sequence on top of the stack as strings (as `ipairs` sees it); `violation` if one is not a string.
    private func strings(_ violation: Violation) throws(Violation) -> [String] {
        var strings: [String] = []
        let count = self.lua.rawLength(at: -1)
        guard count > 0 else { return [] }
        for position in 1...count {
            let string = self.lua.withElement(position, ofTableAt: -1) { self.lua.string(at: -1) }
            guard let string else {
                if self.lua.withElement(position, ofTableAt: -1, { self.lua.type(at: -1) }) == .nil { break }
                throw violation
            }
            strings.append(string)
        }
        return strings
    }
}
