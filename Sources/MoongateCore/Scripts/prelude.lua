local host, codec, debug, charge = ...
local getinfo = debug.getinfo
local type, pairs, ipairs, error, pcall, tostring, setmetatable, rawget, rawset, select, next =
      type, pairs, ipairs, error, pcall, tostring, setmetatable, rawget, rawset, select, next
local concat, sort = table.concat, table.sort
local huge = math.huge
local encode_json, decode_json = codec.encode, codec.decode

local dispatch = {}
local endpoints = {}      -- declaration order; the host addresses them by index
local conns = {}          -- connection id -> conn object, created when a callback first needs it
local timers = {}         -- timer id -> { fn, repeats, endpoint }
local next_timer = 0
local current             -- index of the endpoint whose callback is running

-- Text goes to clients as text frames, which must be UTF-8: checked once, here, so that a bad
-- string fails the script's call instead of making every client that gets it close (1007).
local utf8_len = utf8.len
local function checked_text(text, what, level)
  if utf8_len(text) == nil then
    error(what .. " is not valid UTF-8 text (send bytes with conn:send_binary)", level + 1)
  end
  return text
end

local function encode(value, what, level)
  local kind = type(value)
  if kind == "string" then return checked_text(value, what or "message", level + 1) end
  if kind == "table" then return encode_json(value) end  -- the codec refuses strings that are not UTF-8
  error((what or "message") .. " must be a table or a string, got " .. kind, level + 1)
end

-- Waiting on I/O -------------------------------------------------------------------------------

-- The host runs every callback on a coroutine. An I/O function asks the host to start the call,
-- which returns its id, then yields (WAIT, id); the host resumes the callback with the call's
-- results. A script's own coroutines pass such a yield on to the host and hand the results back.
local WAIT = {}
local raw_yield, raw_resume, raw_create, raw_status = coroutine.yield, coroutine.resume, coroutine.create, coroutine.status
local pack, unpack = table.pack, table.unpack

local function resumed(saved, ...)
  current = saved  -- other callbacks ran while this one waited
  return ...
end

local modules_loading = 0  -- require()s under way: a module's top level may not wait

local function wait(id, reason)
  if id == nil then return nil, reason end
  return resumed(current, raw_yield(WAIT, id))
end

-- Called by each I/O function before it asks the host for anything: a module's top level runs
-- once, inside require, and may not wait (nothing is started that would then be abandoned).
local function may_wait(what)
  if modules_loading > 0 then
    error(what .. ": a module cannot wait for I/O while it loads; call it from a function the module returns", 3)
  end
end

-- A number of seconds an I/O call may be given: positive and finite.
local function check_timeout(timeout, what)
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout > 0) or timeout == huge) then
    error(what .. ": timeout must be a finite number of seconds > 0", 3)
  end
end

-- A script's coroutine whose wait the host is carrying out: only that wait's result resumes it
-- (another callback resuming it would hand it made-up results).
local waiting_coroutines = setmetatable({}, { __mode = "k" })

local function waited(co, ...)
  waiting_coroutines[co] = nil
  return ...
end

local function relay(co, ok, marker, ...)
  if ok and marker == WAIT and raw_status(co) == "suspended" then
    waiting_coroutines[co] = true
    return relay(co, raw_resume(co, waited(co, wait(...))))
  end
  return ok, marker, ...
end

-- The coroutines the script made; the ones the host runs callbacks on are not the script's to
-- resume or close (another client's callback would get made-up results).
local own_coroutines = setmetatable({}, { __mode = "k" })
local raw_close = coroutine.close

local function owned(co, what)
  if not own_coroutines[co] then
    error(what .. ": " .. (type(co) == "thread" and "not a coroutine this script created" or "expected a coroutine, got " .. type(co)), 3)
  end
  if waiting_coroutines[co] then
    error(what .. ": the coroutine waits for I/O; its result resumes it", 3)
  end
  return co
end

function coroutine.create(fn)
  local co = raw_create(fn)
  own_coroutines[co] = true
  return co
end

function coroutine.resume(co, ...) return relay(co, raw_resume(owned(co, "coroutine.resume"), ...)) end
function coroutine.close(co) return raw_close(owned(co, "coroutine.close")) end

local function unwrapped(ok, ...)
  if ok then return ... end
  error((...), 0)
end

function coroutine.wrap(fn)
  local co = raw_create(fn)
  own_coroutines[co] = true
  return function(...) return unwrapped(relay(co, raw_resume(owned(co, "coroutine.wrap"), ...))) end
end

local function location(level)
  local info = getinfo(level + 1, "Sl")
  if info == nil then return "?" end
  return info.short_src .. ":" .. (info.currentline or 0)
end

-- Endpoint definitions -------------------------------------------------------------------------

-- The fields, defaults and checks of a definition live in the host (EndpointSchema.swift), which
-- reads each recorded table once the script has run.
function endpoint(def)
  if type(def) ~= "table" then error("endpoint: expected a table, got " .. type(def), 2) end
  endpoints[#endpoints + 1] = { def = def, where = location(2) }
  return def
end

function dispatch.describe()
  return endpoints
end

-- Connections ----------------------------------------------------------------------------------

-- What a conn is (its id, path, headers, ...) lives here, out of the script's reach: a conn's own
-- table holds only what the script may change (data, user), and its metatable is hidden, so no
-- table a script makes can pass for a connection.
local Conn = {}
local LAZY = { params = true, query = true, headers = true, path = true, remote = true }
local conn_ids = setmetatable({}, { __mode = "k" })    -- conn -> connection id
local conn_facts = setmetatable({}, { __mode = "k" })  -- conn -> { key = value } read so far
local conn_meta = {
  __index = function(self, key)
    local method = Conn[key]
    if method ~= nil then return method end
    local id = conn_ids[self]
    if key == "id" then return id end
    if LAZY[key] and id ~= nil then
      local facts = conn_facts[self]
      local value = facts[key]
      if value == nil then
        value = host.conn_info(id, key)
        facts[key] = value
      end
      return value
    end
    return nil
  end,
  __newindex = function(self, key, value)
    if key == "id" or LAZY[key] or Conn[key] ~= nil then error("conn." .. tostring(key) .. " is read-only", 2) end
    rawset(self, key, value)
  end,
  __tostring = function(self) return "conn#" .. tostring(conn_ids[self]) end,
  __metatable = "conn",
}

local function new_conn(id)
  local auth_json = host.conn_info(id, "auth")
  local auth = auth_json and decode_json(auth_json) or nil
  local conn = setmetatable({ data = { auth = auth }, user = auth }, conn_meta)
  conn_ids[conn] = id
  conn_facts[conn] = {}
  return conn
end

-- The id of a real conn, or an error naming the method called on something else.
local function id_of(conn, method)
  local id = conn_ids[conn]
  if id == nil then error("conn:" .. method .. " expects a connection, got " .. type(conn), 3) end
  return id
end

local function conn_of(id)
  local conn = conns[id]
  if conn == nil then
    conn = new_conn(id)
    conns[id] = conn
  end
  return conn
end

function Conn:send(message) return host.send(id_of(self, "send"), encode(message, "conn:send message", 2), false) end
function Conn:send_binary(data)
  local id = id_of(self, "send_binary")
  if type(data) ~= "string" then error("conn:send_binary expects a string, got " .. type(data), 2) end
  return host.send(id, data, true)
end
function Conn:close(code, reason) host.close(id_of(self, "close"), code or 1000, reason or "") end

-- Dispatch: what the host calls ----------------------------------------------------------------

local function ack(raw_id)
  if raw_id == nil then return '{"type":"ack","received":true}' end
  return '{"type":"ack","received":true,"id":' .. raw_id .. '}'
end

local function error_reply(text) return encode_json({ type = "error", error = text }) end

-- `received`: the client's own text, which the host has already checked for UTF-8 (an echo's
-- reply is that very string, and need not be checked again).
local function reply_of(result, received)
  if result == received and received ~= nil then return result end
  local kind = type(result)
  if kind == "table" or kind == "string" then return encode(result, "the reply", 2) end
  return nil
end

-- A table answering a message that has an id carries that id too (unless it sets its own), so a
-- client can match replies to requests; the id is spliced in as the client wrote it.
local function answer_of(result, raw_id)
  if raw_id == nil or type(result) ~= "table" or result.id ~= nil then return reply_of(result) end
  local text = encode(result, "the reply", 2)
  if text == "{}" then return '{"id":' .. raw_id .. '}' end
  if text:sub(1, 1) ~= "{" then return text end
  return '{"id":' .. raw_id .. ',' .. text:sub(2)
end

-- authorize(req) returns true [, auth table] to let the client in, or false [, status [, reason]]
-- (or status, reason) to refuse it with HTTP 401/403.
function dispatch.authorize(index, path, params, query, headers, remote)
  current = index
  local request = { path = path, params = params, query = query, headers = headers, remote = remote }
  local verdict, detail, reason = endpoints[index].def.authorize(request)
  if verdict == true then
    if type(detail) == "table" then return true, nil, nil, encode_json(detail) end
    return true
  end
  if type(verdict) == "number" then return false, verdict, type(detail) == "string" and detail or nil end
  if type(detail) == "string" then return false, nil, detail end
  return false, type(detail) == "number" and detail or nil, type(reason) == "string" and reason or nil
end

function dispatch.open(index, id)
  current = index
  local def = endpoints[index].def
  if def.on_open then def.on_open(conn_of(id)) end
  local initial = def.initial
  if type(initial) == "function" then initial = initial(conn_of(id)) end
  return reply_of(initial)
end

function dispatch.text(index, id, text, raw_id)
  current = index
  local def = endpoints[index].def
  if def.on == nil and def.on_text ~= nil then
    return reply_of(def.on_text(conn_of(id), text), text)
  end
  local ok, message = pcall(decode_json, text)
  if not ok or type(message) ~= "table" or text:match("^%s*%[") then
    if def.on_text then return reply_of(def.on_text(conn_of(id), text), text) end
    if not ok then return error_reply("invalid JSON: " .. tostring(message)) end
    return error_reply("expected a JSON object with a \"type\" field")
  end
  local kind = message.type
  local handlers = def.on
  local handler = handlers and (handlers[kind] or handlers["*"])
  -- raw_id is the id exactly as the client wrote it (the host scanned it), so a large integer
  -- id is not rounded by a trip through a Lua number.
  if handler == nil then return ack(raw_id) end
  local result = handler(conn_of(id), message, text)
  if result == false then return nil end  -- handled, and deliberately unanswered
  return answer_of(result, raw_id) or ack(raw_id)
end

function dispatch.binary(index, id, data)
  current = index
  local def = endpoints[index].def
  if def.on_binary == nil then
    return error_reply("this endpoint does not accept binary messages"), false
  end
  local result = def.on_binary(conn_of(id), data)
  if type(result) == "string" then return result, true end
  return reply_of(result), false
end

function dispatch.close(index, id, code)
  local conn = conns[id]
  conns[id] = nil
  local entry = endpoints[index]
  if entry and entry.def.on_close then
    current = index
    entry.def.on_close(conn or new_conn(id), code)
  end
end

function dispatch.poll(index)
  current = index
  local result = endpoints[index].def.watch.poll()
  if result == nil then return nil end
  return encode(result, "watch.poll result", 1)
end

function dispatch.heartbeat(index)
  current = index
  local message = endpoints[index].def.heartbeat.message
  if message == nil then return '{"type":"heartbeat"}' end
  if type(message) == "function" then message = message() end
  return encode(message, "heartbeat.message", 1)
end

function dispatch.timer(id)
  local timer = timers[id]
  if timer == nil then return end
  if not timer.repeats then timers[id] = nil end
  current = timer.endpoint
  timer.fn()
end

-- Script-side functions ------------------------------------------------------------------------

local function sole_endpoint()
  if current ~= nil then return current end
  if #endpoints == 1 then return 1 end
  error("broadcast(msg) outside an endpoint callback needs exactly one endpoint in this file; "
        .. "use publish(path, msg)", 3)
end

function broadcast(message)
  local index = sole_endpoint()
  host.broadcast(index, encode(message, "broadcast message", 2))
end

function publish(path, message)
  if type(path) ~= "string" then error("publish expects a path, got " .. type(path), 2) end
  return host.publish(path, encode(message, "publish message", 2))
end

local Timer = { __metatable = "timer" }  -- hidden: every timer shares it
Timer.__index = Timer
function Timer:cancel()
  if timers[self.id] then
    timers[self.id] = nil
    host.cancel(self.id)
  end
end

-- Timers, watchers and heartbeats run at most every MIN_INTERVAL seconds and at least every
-- MAX_INTERVAL (the host checks the same bounds for watch.every and heartbeat.every).
local MIN_INTERVAL, MAX_INTERVAL = 0.01, 1000000

local function make_timer(seconds, fn, repeats, name)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds > MAX_INTERVAL
     or (repeats and seconds < MIN_INTERVAL) or seconds < 0 then
    error(name .. " expects a number of seconds from " .. (repeats and MIN_INTERVAL or 0) .. " to " .. MAX_INTERVAL
          .. ", got " .. tostring(seconds), 3)
  end
  if type(fn) ~= "function" then error(name .. " expects a function", 3) end
  next_timer = next_timer + 1
  timers[next_timer] = { fn = fn, repeats = repeats, endpoint = current }
  host.timer(next_timer, seconds, repeats)
  return setmetatable({ id = next_timer }, Timer)
end

function every(seconds, fn) return make_timer(seconds, fn, true, "every") end
function after(seconds, fn) return make_timer(seconds, fn, false, "after") end
function now() return host.now() end

function env(name, default)
  local value = host.env(name)
  if value == nil then return default end
  return value
end

function emit(session, event)
  if type(session) ~= "string" and type(session) ~= "number" then
    error("emit expects a session id, got " .. type(session), 2)
  end
  if type(event) ~= "table" and type(event) ~= "string" then
    error("emit expects an event table or JSON object text, got " .. type(event), 2)
  end
  local seq, pending = host.emit(tostring(session), encode(event, "event", 2), current, modules_loading > 0)
  if pending == nil then return seq end
  -- In a cluster the commit to PostgreSQL is waited for like any I/O call.
  local committed, reason = wait(pending)
  if committed == nil then error(reason, 2) end
  return committed
end

function close_session(session) host.close_session(tostring(session)) end

function session_status(session)
  local status, pending = host.session_status(tostring(session), modules_loading > 0)
  if pending ~= nil then
    local reason
    status, reason = wait(pending)
    if status == nil and reason ~= nil then error(reason, 2) end
  end
  if status == nil then return nil end
  return decode_json(status)
end

-- cluster.node_id: this host's name in its cluster (nil on a host alone). cluster.nodes(): the
-- hosts seen in the last few seconds, { id, address, started_at, connections, last_seen } each.
cluster = setmetatable({
  nodes = function() return decode_json(host.cluster_nodes()) end,
}, {
  __index = function(_, key) if key == "node_id" then return host.cluster_node_id() end end,
  __newindex = function() error("cluster is read-only", 2) end,
  __metatable = "cluster",
})

-- HTTP -----------------------------------------------------------------------------------------

-- http.request{ method, url, headers, body, timeout } -> { status, headers, body } or nil, reason.
-- A table body is sent as JSON. Only hosts allowed with --allow-net are reached.
http = {}

local function has_header(headers, name)
  for key in pairs(headers) do
    if type(key) == "string" and key:lower() == name then return true end
  end
  return false
end

function http.request(options)
  if type(options) ~= "table" then error("http.request expects a table { method, url, headers, body, timeout }", 2) end
  local url, headers, body = options.url, options.headers or {}, options.body
  if type(url) ~= "string" then error("http.request: url must be a string, got " .. type(url), 2) end
  if type(headers) ~= "table" then error("http.request: headers must be a table, got " .. type(headers), 2) end
  if type(body) == "table" then
    body = encode_json(body)
    if not has_header(headers, "content-type") then
      local with_type = { ["content-type"] = "application/json" }
      for key, value in pairs(headers) do with_type[key] = value end
      headers = with_type
    end
  elseif body ~= nil and type(body) ~= "string" then
    error("http.request: body must be a string or a table, got " .. type(body), 2)
  end
  local timeout = options.timeout
  check_timeout(timeout, "http.request")
  may_wait("http.request")
  local response, reason = wait(host.http_request(options.method or "GET", url, headers, body, timeout))
  if response == nil then return nil, reason end
  return response
end

local function with_options(options, fields)
  local merged = {}
  if options ~= nil then
    if type(options) ~= "table" then error("http options must be a table, got " .. type(options), 3) end
    for key, value in pairs(options) do merged[key] = value end
  end
  for key, value in pairs(fields) do merged[key] = value end
  return merged
end

function http.get(url, options) return http.request(with_options(options, { url = url, method = "GET" })) end
function http.post(url, body, options)
  return http.request(with_options(options, { url = url, method = "POST", body = body }))
end

function read_file(path) return host.read_file(path) end
function read_json(path) return decode_json(host.read_file(path)) end
function file_mtime(path) return host.file_mtime(path) end

-- Integers stay integers, arrays stay arrays (json.array() makes an empty one on purpose), floats
-- read back exactly; see Sources/LuaJSON/json.c.
json = { encode = encode_json, decode = decode_json, null = codec.null, array = codec.array, is_array = codec.is_array }

-- jwt.verify(token [, { audience, issuer }]) -> claims, or nil and the reason. HS256 with the
-- secret in $MOONGATE_JWT_SECRET; RS/PS/ES256-512 and EdDSA with the keys of --jwks.
jwt = {
  verify = function(token, options)
    if type(token) ~= "string" then return nil, "no token" end
    options = options or {}
    if type(options) ~= "table" then error("jwt.verify: options must be a table { audience, issuer }", 2) end
    local audience, issuer = options.audience, options.issuer
    if audience ~= nil and type(audience) ~= "string" then error("jwt.verify: audience must be a string", 2) end
    if issuer ~= nil and type(issuer) ~= "string" then error("jwt.verify: issuer must be a string", 2) end
    may_wait("jwt.verify")
    local claims, reason = wait(host.jwt_verify(token, audience, issuer))
    if claims == nil then return nil, reason end
    return decode_json(claims)
  end,
}

-- SQL -----------------------------------------------------------------------------------------

-- sql.query(db, sql, ...) -> array of rows (tables by column name; NULL is json.null), or nil, reason.
-- sql.exec(db, sql, ...) -> number of rows changed, or nil, reason. Parameters ($1 or ?) are bound.
local function sql_call(kind)
  return function(database, statement, ...)
    if type(database) ~= "string" then error("sql." .. kind .. ": the database name must be a string, got " .. type(database), 2) end
    if type(statement) ~= "string" then error("sql." .. kind .. ": the SQL must be a string, got " .. type(statement), 2) end
    may_wait("sql." .. kind)
    local result, reason = wait(host.sql(kind, database, statement, ...))
    if result == nil then return nil, reason end
    return result
  end
end
sql = { query = sql_call("query"), exec = sql_call("exec") }

-- Commands --------------------------------------------------------------------------------------

-- exec(program, args [, { timeout, stdin }]) -> { code, stdout, stderr }, or nil, reason. Only
-- programs allowed with --allow-exec; never through a shell.
function exec(program, args, options)
  if type(program) ~= "string" then error("exec: program must be a string, got " .. type(program), 2) end
  args = args or {}
  if type(args) ~= "table" then error("exec: args must be an array of strings, got " .. type(args), 2) end
  for i = 1, #args do
    local kind = type(args[i])
    if kind ~= "string" and kind ~= "number" then error("exec: argument " .. i .. " must be a string, got " .. kind, 2) end
  end
  options = options or {}
  if type(options) ~= "table" then error("exec: options must be a table { timeout, stdin }", 2) end
  local timeout, stdin = options.timeout, options.stdin
  check_timeout(timeout, "exec")
  if stdin ~= nil and type(stdin) ~= "string" then error("exec: stdin must be a string, got " .. type(stdin), 2) end
  may_wait("exec")
  local result, reason = wait(host.exec(program, args, stdin, timeout))
  if result == nil then return nil, reason end
  return result
end

-- server_url([path]) -> "http://127.0.0.1:PORT" .. path: this host's own listener, which scripts
-- may always call (no --allow-net needed); nil while the host is not listening yet.
function server_url(path)
  local base = host.server_url()
  if base == nil then return nil end
  return base .. (path or "")
end

local function log_at(level)
  return function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    host.log(level, concat(parts, " "), location(2))
  end
end
log = { debug = log_at(0), info = log_at(1), warn = log_at(2), error = log_at(3) }
print = log.info

-- Text only (bytecode can break the sandbox), with the environment only when one is given, and
-- the compiler's work charged to the budget: a byte of source a quarter of an instruction.
local raw_load = load
function load(chunk, name, mode, ...)
  if type(chunk) == "string" then
    charge(#chunk // 4)
  elseif type(chunk) == "function" then
    local reader = chunk
    chunk = function()
      local piece = reader()
      if type(piece) == "string" then charge(#piece // 4 + 1) end
      return piece
    end
  end
  return raw_load(chunk, name, "t", ...)
end

-- Finalizers would run outside every limit: Lua turns hooks off inside __gc (so no budget), and
-- a collection can start while the host pushes values with the memory cap lifted.
local raw_setmetatable = setmetatable
_ENV.setmetatable = function(object, metatable)
  if type(metatable) == "table" and rawget(metatable, "__gc") ~= nil then
    error("setmetatable: __gc finalizers are not allowed in scripts", 2)
  end
  return raw_setmetatable(object, metatable)
end

-- Modules: require("util.time") runs DIR/lib/util/time.lua in this state, once, and returns what
-- it returned (true if nothing). A fresh state on every reload reads them again.
local modules = {}        -- name -> its value; LOADING while its chunk runs
local LOADING = {}
function require(name)
  if type(name) ~= "string" then error("require expects a module name, got " .. type(name), 2) end
  local value = modules[name]
  if value == LOADING then error("module '" .. name .. "' is required again while it loads (a cycle)", 2) end
  if value ~= nil then return value end
  local source, chunk_name = host.read_module(name)
  if source == nil then error(chunk_name, 2) end
  local chunk, problem = raw_load(source, "@" .. chunk_name, "t")
  if chunk == nil then error(problem, 0) end  -- already "file:line: ..." in the module
  modules[name] = LOADING
  modules_loading = modules_loading + 1
  local ok, result = pcall(chunk, name)
  modules_loading = modules_loading - 1
  if not ok then
    modules[name] = nil
    error(result, 0)
  end
  if result == nil then result = true end
  modules[name] = result
  return result
end

-- Every callback starts with no require under way. None can be left over from another callback
-- (a module may not wait), except one that a budget or memory error cut short: those are not
-- caught by require's pcall, so its count would stay up and refuse every later wait, and the
-- module would stay marked as loading.
local function forget_cut_short_loads()
  modules_loading = 0
  for name, value in pairs(modules) do
    if value == LOADING then modules[name] = nil end
  end
end

for name, callback in pairs(dispatch) do
  if name ~= "describe" then
    dispatch[name] = function(...)
      if modules_loading ~= 0 then forget_cut_short_loads() end
      return callback(...)
    end
  end
end

return dispatch
