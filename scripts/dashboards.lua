-- Dashboard feeds: eight read-only endpoints, each streaming one JSON file from data/.
-- A new client gets the latest {"type":"<name>_update","data":...}; editing the file
-- reaches every connected client within one poll (2 s).
local feed = require("feed")

local feeds = {
  -- name                path                             data file
  { "queue",             "/api/v1/ws/queue",             "data/queue.json" },
  { "adw_monitor",       "/api/v1/ws/adw-monitor",       "data/adw_monitor.json" },
  { "system_status",     "/api/v1/ws/system-status",     "data/system_status.json" },
  { "workflows",         "/api/v1/ws/workflows",         "data/workflows.json" },
  { "routes",            "/api/v1/ws/routes",            "data/routes.json" },
  { "workflow_history",  "/api/v1/ws/workflow-history",  "data/workflow_history.json" },
  { "planned_features",  "/api/v1/ws/planned-features",  "data/planned_features.json" },
  { "webhook_status",    "/api/v1/ws/webhook-status",    "data/webhook_status.json" },
}

for _, entry in ipairs(feeds) do
  local name, path, file = entry[1], entry[2], entry[3]

  endpoint {
    path = path,
    -- No `initial`: the host sends new clients the watcher's latest value.
    watch = {
      every = 2.0,
      poll = function() return feed.update(name, read_file(file)) end,
    },
  }
end
