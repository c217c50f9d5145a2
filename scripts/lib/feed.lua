-- lib/feed.lua: what the dashboard scripts share (dashboards.lua and api_feeds.lua): the
-- {"type":"<name>_update","data":...} message every dashboard feed sends, and reading a JSON API.
local feed = {}

-- JSON text as the data of a feed message. The text is sent as it is, because re-encoding the
-- decoded table would turn every [] into {} and round numbers to 14 digits; it is only decoded to
-- check it, so a half-written file or an HTML error page raises here, and the host logs that and
-- tries again on the next tick.
function feed.update(name, text)
  json.decode(text)
  return '{"type":"' .. name .. '_update","data":' .. text .. "}"
end

-- The body of a JSON API's answer to GET url; raises with the reason if there is none.
function feed.fetch(url)
  local response, reason = http.get(url, { timeout = 5, headers = { accept = "application/json" } })
  if response == nil then error("GET " .. url .. ": " .. reason, 2) end
  if response.status ~= 200 then error("GET " .. url .. ": HTTP " .. response.status, 2) end
  return response.body
end

return feed
