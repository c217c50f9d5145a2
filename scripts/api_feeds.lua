-- A dashboard fed by an HTTP JSON API instead of a file: every 2 s the watcher GETs the API and,
-- when the answer changed, every viewer gets {"type":"demo_session_update","data":...}.
-- By default it reads this host's own /sessions/demo (the session progress.lua fills), so it works
-- out of the box; DEMO_SESSION_URL points it elsewhere (that host must be allowed with --allow-net).
local feed = require("feed")

local source = env("DEMO_SESSION_URL")

return endpoint {
  path = "/api/v1/ws/demo-session",
  watch = {
    every = 2.0,
    poll = function()
      local url = source or server_url("/sessions/demo")
      if url == nil then return nil end   -- the host is not listening yet
      return feed.update("demo_session", feed.fetch(url))
    end,
  },
}
