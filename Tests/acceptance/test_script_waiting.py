"""What a waiting callback keeps (#15): a handler that waits on I/O past its client's disconnect
still reads that client's params and query afterwards, and its on_close runs after it, with the
same view. A real HTTP server that holds its answer until the test releases it, a real client."""

import asyncio
import http.server
import json
import threading

from websockets.asyncio.client import connect

from moongate_process import MoongateProcess

SCRIPT = r"""
endpoint {
  path = "/rooms/:room",
  on = {
    slow = function(conn, msg)
      http.get(msg.url)
      log.info("after the wait: room=" .. tostring(conn.params.room) .. " x=" .. tostring(conn.query.x))
      return false
    end,
  },
  on_close = function(conn, code)
    log.info("on_close: room=" .. tostring(conn.params.room) .. " code=" .. tostring(code))
  end,
}
"""


class HoldingServer:
    """Answers GET /hold/NAME once the test releases NAME; `arrived(NAME)` is set on arrival."""

    def __init__(self):
        self.events = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.event("arrived", name).set()
                server.event("release", name).wait(30)
                body = b"{}"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def event(self, kind, name):
        return self.events.setdefault((kind, name), threading.Event())

    def url(self, name):
        return f"http://127.0.0.1:{self.server.server_address[1]}/hold/{name}"

    def close(self):
        for event in self.events.values():
            event.set()
        self.server.shutdown()


def test_a_handler_waiting_past_a_disconnect_still_reads_its_client(tmp_path):
    (tmp_path / "rooms.lua").write_text(SCRIPT)
    backend = HoldingServer()
    host = MoongateProcess(tmp_path, "--allow-net", "127.0.0.1").start()
    try:
        async def scenario():
            async with connect(host.url("/rooms/lobby?x=7")) as ws:
                await ws.send(json.dumps({"type": "slow", "url": backend.url("a")}))
                assert await asyncio.to_thread(backend.event("arrived", "a").wait, 20)
            # The client is gone (its close handshake is over) while the handler still waits.

        mark = host.log_mark()
        asyncio.run(scenario())
        backend.event("release", "a").set()
        host.wait_for_log(lambda l: "after the wait:" in l, timeout=20, since=mark, what="the handler's end")
        host.wait_for_log(lambda l: "on_close:" in l, timeout=20, since=mark, what="on_close")
        lines = [l for l in host.lines_since(mark) if "after the wait:" in l or "on_close:" in l]
        assert "after the wait: room=lobby x=7" in lines[0], lines
        assert "on_close: room=lobby code=1000" in lines[1], lines
    finally:
        backend.close()
        assert host.stop() == 0


MODULE_SCRIPT = r"""
endpoint {
  path = "/m",
  on = {
    spin = function() require("spin") end,
    fetch = function() local response, reason = http.get(server_url("/healthz")); return { type = "fetched", status = response and response.status, reason = reason } end,
    load_at_top = function() local ok, err = pcall(require, "waits"); return { type = "loaded", ok = ok, err = tostring(err) } end,
  },
}
"""


def test_a_module_cut_short_or_waiting_at_load_leaves_later_calls_working(tmp_path):
    """A module whose top level runs past the budget fails that message only: the next callback
    can wait on I/O, and requiring the module again runs it again (not "a cycle"). A module whose
    top level tries I/O gets a clear error and nothing is started."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "spin.lua").write_text("local n = 0\nwhile true do n = n + 1 end\n")
    (tmp_path / "lib" / "waits.lua").write_text('return http.get(server_url("/healthz"))\n')
    (tmp_path / "m.lua").write_text(MODULE_SCRIPT)
    host = MoongateProcess(tmp_path, "--lua-budget", "1000000").start()
    try:
        async def scenario():
            async with connect(host.url("/m")) as ws:
                replies = []
                for message in ({"type": "spin"}, {"type": "fetch"}, {"type": "spin"}, {"type": "load_at_top"}):
                    await ws.send(json.dumps(message))
                    replies.append(json.loads(await asyncio.wait_for(ws.recv(), 20)))
                return replies

        spun, fetched, spun_again, loaded = asyncio.run(scenario())
    finally:
        assert host.stop() == 0
    assert spun == {"type": "error", "error": "handler ran too long"}
    assert fetched == {"type": "fetched", "status": 200}
    assert spun_again == {"type": "error", "error": "handler ran too long"}
    assert loaded["ok"] is False and "a module cannot wait for I/O while it loads" in loaded["err"], loaded
