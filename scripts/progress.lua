-- /ws/progress/:session: a workflow's progress as a resumable stream of events.
-- A fake workflow runs forever in session "demo": watch it, kill the client, reconnect with
-- ?last_seq=<the last seq you saw> and nothing is lost or repeated. Every 20 s a short run also
-- goes into its own session "run-<n>" and ends with "complete", which closes that session.
-- Producers outside Lua publish with: curl -X POST 127.0.0.1:8080/sessions/demo/events -d '{"type":"note"}'
local AGENTS = { "planner", "builder", "tester", "reviewer" }

local demo_step = 0
every(1.5, function()
  demo_step = demo_step + 1
  local agent = AGENTS[(demo_step - 1) % #AGENTS + 1]
  local kind = demo_step % 2 == 1 and "agent_start" or "agent_complete"
  emit("demo", { type = kind, agent = agent, step = demo_step, at = now() })
end)

local runs = 0
every(20, function()
  runs = runs + 1
  local session = "run-" .. runs
  emit(session, { type = "workflow_start", agents = #AGENTS })
  for index, agent in ipairs(AGENTS) do
    after(index, function() emit(session, { type = "agent_start", agent = agent }) end)
    after(index + 0.5, function() emit(session, { type = "agent_complete", agent = agent }) end)
  end
  after(#AGENTS + 1, function() emit(session, { type = "complete", result = "ok" }) end)
end)

return endpoint {
  path = "/ws/progress/:session",
  session = { param = "session", history = 1000, retain = 600, closes_on = { "complete", "error" } },
  heartbeat = { every = 30, message = function() return { type = "heartbeat", ts = now() } end },
  keepalive = { ping_every = 20, timeout = 10 },
}
