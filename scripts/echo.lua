-- /echo: every text and binary message comes straight back, unchanged.
-- The smallest endpoint there is, and the one protocol conformance runs (Autobahn's cases) use,
-- so it admits messages up to 16 MiB where other endpoints default to 1 MiB.
return endpoint {
  path = "/echo",
  on_text = function(conn, text) return text end,
  on_binary = function(conn, data) return data end,
  max_message_size = 16 * 1024 * 1024,
}
