-- /echo: every text and binary message comes straight back, unchanged.
-- Used for protocol conformance runs (Autobahn via kosoku) and as the smallest example.
return endpoint {
  path = "/echo",
  on_text = function(conn, text) return text end,
  on_binary = function(conn, data) return data end,
}
