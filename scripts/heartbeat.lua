-- /ws/heartbeat: where ADW workers check in. They register, send heartbeats, report events
-- (forwarded to the ADW monitor dashboard) and job results (the last 100 are kept here).
-- Every message is acknowledged with {"type":"ack","received":true,...}: workers count an ack
-- without "received" as unacknowledged.
-- With JOB_RESULTS_URL set (and its host allowed with --allow-net), each job result is also
-- POSTed there as JSON, and the ack says how the backend answered: backend_status, or
-- backend_error when it could not be reached (the result is still kept here).
local MAX_RESULTS = 100
local results = {}   -- newest last
local results_url = env("JOB_RESULTS_URL")

return endpoint {
  path = "/ws/heartbeat",
  keepalive = { ping_every = 20, timeout = 10 },

  on = {
    worker_register = function(conn, msg)
      conn.data.worker = msg.worker_id or msg.worker or ("conn-" .. conn.id)
      conn.data.capabilities = msg.capabilities
      log.info("worker registered:", conn.data.worker)
      return { type = "ack", received = true, msg = "registered", id = msg.id }
    end,

    heartbeat = function(conn, msg)
      conn.data.last_seen = now()   -- nil reply: the host sends the default ack
    end,

    event = function(conn, msg)
      publish("/api/v1/ws/adw-monitor", {
        type = "worker_event",
        worker = conn.data.worker or msg.worker_id,
        event = msg,
      })
    end,

    job_result = function(conn, msg)
      results[#results + 1] = { worker = conn.data.worker, at = now(), result = msg }
      if #results > MAX_RESULTS then table.remove(results, 1) end
      local ack = { type = "ack", received = true, msg = "recorded", job_id = msg.job_id, id = msg.id }
      if results_url then
        -- The worker's next message waits until this answers, so its acks stay in order.
        local response, reason = http.post(results_url, { worker = conn.data.worker, result = msg })
        if response then ack.backend_status = response.status else ack.backend_error = reason end
      end
      return ack
    end,
  },

  on_close = function(conn, code)
    if conn.data.worker then
      log.info("worker disconnected:", conn.data.worker, "code", code)
    end
  end,
}
