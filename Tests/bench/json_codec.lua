-- The JSON codec (Sources/LuaJSON/json.c) beside Debian's lua-cjson, in one stock Lua 5.4
-- interpreter, on a mix of what scripts encode and decode. Run by Tests/bench/json_codec.sh.
package.cpath = assert(os.getenv("MOONGATE_JSON_SO_DIR"), "run through json_codec.sh") .. "/?.so;" .. package.cpath
local ours = require "moongate_json"
local cjson = require "cjson"

-- workloads, as Lua values built by a script
local small = { type = "job_started", job_id = 42, id = 7 }
local function dashboard()
  local workers, queues, online = {}, {}, {}
  for i = 1, 24 do
    workers[i] = { id = i, name = ("worker-%02d"):format(i), status = i % 3 == 0 and "idle" or "busy",
                   load = (i * 37 % 100) / 100 + 0.005, jobs = i * 7, uptime_s = 86400.25 * i, host = "10.0.0." .. i }
  end
  for i = 1, 6 do queues[i] = { name = "queue-" .. i, depth = i * 123, rate = i * 4.5 + 0.1, oldest_ms = 1700000000123 + i } end
  for i = 1, 80 do online[i] = 100000 + i * 17 end
  return { type = "dashboard", ts = 1700000000123, workers = workers, queues = queues, online = online,
           totals = { jobs = 98231, failed = 12, avg_ms = 41.7, p99_ms = 312.25 }, title = "Moongate — cluster \"eu-1\"" }
end
local function thousand()
  local t = {}
  for i = 1, 1000 do t[i] = { id = i, name = "user" .. i, score = i * 1.5 + 0.25, active = i % 2 == 0 } end
  return t
end
local workloads = {
  { name = "small message", value = small, weight = 1000 },
  { name = "4 KB dashboard", value = dashboard(), weight = 100 },
  { name = "1000 small objects", value = thousand(), weight = 10 },
}
for _, w in ipairs(workloads) do w.text = cjson.encode(w.value) end
print(("sizes: small %d B, dashboard %d B, array %d B"):format(#workloads[1].text, #workloads[2].text, #workloads[3].text))

local function rate(f, arg)
  local n, elapsed = 1, 0
  while true do
    local t0 = os.clock()
    for _ = 1, n do f(arg) end
    elapsed = os.clock() - t0
    if elapsed > 0.3 then break end
    n = n * 2
  end
  return n / elapsed
end

local best = {}
for round = 1, tonumber(arg[1]) or 3 do
  for _, w in ipairs(workloads) do
    for _, lib in ipairs({ { "ours", ours }, { "cjson", cjson } }) do
      for _, op in ipairs({ "decode", "encode" }) do
        local key = w.name .. "|" .. lib[1] .. "|" .. op
        local r = op == "decode" and rate(lib[2].decode, w.text) or rate(lib[2].encode, w.value)
        if not best[key] or r > best[key] then best[key] = r end
      end
    end
  end
end

print(("%-20s %-6s %14s %14s %8s"):format("workload", "op", "ours ops/s", "cjson ops/s", "ratio"))
local mix = { ours = { decode = 0, encode = 0 }, cjson = { decode = 0, encode = 0 } }
for _, w in ipairs(workloads) do
  for _, op in ipairs({ "decode", "encode" }) do
    local a, b = best[w.name .. "|ours|" .. op], best[w.name .. "|cjson|" .. op]
    print(("%-20s %-6s %14.0f %14.0f %7.2fx"):format(w.name, op, a, b, a / b))
    mix.ours[op] = mix.ours[op] + w.weight / a
    mix.cjson[op] = mix.cjson[op] + w.weight / b
  end
end
for _, op in ipairs({ "decode", "encode" }) do
  print(("mix (1000 small + 100 dashboards + 10 arrays) %s: ours %.1f ms, cjson %.1f ms, %.2fx"):format(
    op, mix.ours[op] * 1000, mix.cjson[op] * 1000, mix.cjson[op] / mix.ours[op]))
end
