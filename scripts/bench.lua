-- /bench: the benchmark harness protocol (../shared/bench, `moongate bench`).
--   on connect          -> {"type":"hello"}
--   {"type":"broadcast"} -> the same text, unchanged, to every client (sender included), no ack
--   {"type":"event"}     -> {"type":"ack","received":true,"id":<id>} (the host's default ack)
--   anything else        -> an ack
return endpoint {
  path = "/bench",
  initial = '{"type":"hello"}',
  on = {
    broadcast = function(conn, msg, raw)
      broadcast(raw)
      return false
    end,
  },
  on_text = function() return '{"type":"ack","received":true}' end,
}
