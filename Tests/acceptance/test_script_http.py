"""Scripts that wait on HTTP (#15): `http.get`/`http.post`/`http.request` against a real HTTP
server started here, over real WebSocket clients of a real `moongate serve`.

The server below answers JSON, echoes POSTs, redirects, sends large bodies, and holds a response
until the test releases it (an event, not a sleep), so "still waiting" is a state the test controls.

Run: python3 -m pytest -q Tests/acceptance/test_script_http.py   (MOONGATE_BIN overrides the binary)
"""

import asyncio
import http.server
import json
import signal
import socket
import threading
import time

import pytest
from websockets.asyncio.client import connect

from moongate_process import MoongateProcess

SCRIPT = """
endpoint {
  path = "/io",
  on = {
    fetch = function(conn, msg)
      local response, reason = http.get(msg.url, { timeout = msg.timeout, headers = { ["x-test"] = "yes" } })
      if response == nil then return { type = "failed", reason = reason } end
      return { type = "fetched", status = response.status, body = response.body,
               content_type = response.headers["content-type"] }
    end,
    post = function(conn, msg)
      local response, reason = http.post(msg.url, { n = msg.n })
      if response == nil then return { type = "failed", reason = reason } end
      return { type = "posted", status = response.status, body = response.body }
    end,
    wrapped = function(conn, msg)
      -- A script's own coroutine may wait too; the wait passes through it to the host.
      local co = coroutine.wrap(function() return http.get(msg.url).body end)
      return { type = "wrapped", body = co() }
    end,
  },
}
"""


class Backend:
    """A threaded HTTP server; `/hold/NAME` answers only once `release(NAME)` is called."""

    def __init__(self):
        self.held = {}
        self.requests = []
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                backend.requests.append((self.command, self.path, dict(self.headers)))
                if self.path.startswith("/hold/"):
                    backend.event(self.path[len("/hold/"):]).wait(30)
                    return self.answer({"released": self.path})
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/json?via=redirect")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/big":
                    body = b"x" * (2 << 20)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.answer({"path": self.path, "x-test": self.headers.get("x-test")})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                backend.requests.append((self.command, self.path, dict(self.headers)))
                self.answer({"got": json.loads(body), "content_type": self.headers.get("Content-Type")}, status=201)

            def answer(self, value, status=200):
                body = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def event(self, name):
        return self.held.setdefault(name, threading.Event())

    def release(self, name):
        self.event(name).set()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        for event in self.held.values():
            event.set()
        self.server.shutdown()


def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def backend():
    server = Backend()
    yield server
    server.close()


@pytest.fixture
def host(tmp_path, backend):
    (tmp_path / "io.lua").write_text(SCRIPT)
    process = MoongateProcess(tmp_path, "--allow-net", "127.0.0.1", "--http-max-body", "1048576", "--lua-timeout", "5")
    process.start()
    yield process
    process.stop()


async def ask(ws, message):
    await ws.send(json.dumps(message))
    return json.loads(await asyncio.wait_for(ws.recv(), 20))


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_handler_gets_json_posts_a_table_and_follows_a_redirect(host, backend):
    async def scenario():
        async with connect(host.url("/io")) as ws:
            got = await ask(ws, {"type": "fetch", "url": backend.url("/json"), "id": 1})
            assert got["type"] == "fetched" and got["status"] == 200 and got["id"] == 1
            assert got["content_type"] == "application/json"
            assert json.loads(got["body"]) == {"path": "/json", "x-test": "yes"}
            posted = await ask(ws, {"type": "post", "url": backend.url("/items"), "n": 7})
            assert posted["status"] == 201
            assert json.loads(posted["body"]) == {"got": {"n": 7}, "content_type": "application/json"}
            redirected = await ask(ws, {"type": "fetch", "url": backend.url("/redirect")})
            assert json.loads(redirected["body"])["path"] == "/json?via=redirect"
            wrapped = await ask(ws, {"type": "wrapped", "url": backend.url("/json")})
            assert json.loads(wrapped["body"])["path"] == "/json"

    run(scenario())


def test_failures_come_back_as_nil_and_a_reason(host, backend):
    async def scenario():
        async with connect(host.url("/io")) as ws:
            refused = await ask(ws, {"type": "fetch", "url": f"http://127.0.0.1:{closed_port()}/"})
            assert refused == {"type": "failed", "reason": "connection refused"}
            not_allowed = await ask(ws, {"type": "fetch", "url": f"http://localhost:{backend.port}/json"})
            assert "--allow-net localhost" in not_allowed["reason"]
            too_big = await ask(ws, {"type": "fetch", "url": backend.url("/big")})
            assert "--http-max-body" in too_big["reason"]
            timed_out = await ask(ws, {"type": "fetch", "url": backend.url("/hold/timeout"), "timeout": 0.5})
            assert timed_out == {"type": "failed", "reason": "timeout"}
            not_http = await ask(ws, {"type": "fetch", "url": "ftp://127.0.0.1/x"})
            assert "not an http" in not_http["reason"]

    run(scenario())
    # Only the allowed host was ever asked for anything.
    assert all(path != "/json" or headers.get("Host", "").startswith("127.0.0.1") for _, path, headers in backend.requests)


def test_a_waiting_handler_holds_neither_other_clients_nor_the_clients_next_reply_order(host, backend):
    async def scenario():
        async with connect(host.url("/io")) as waiting:
            # Two slow calls and a plain message from one client: answered in the order sent.
            await waiting.send(json.dumps({"type": "fetch", "url": backend.url("/hold/first"), "id": 1}))
            await waiting.send(json.dumps({"type": "fetch", "url": backend.url("/hold/second"), "id": 2}))
            await waiting.send(json.dumps({"type": "ping", "id": 3}))
            others = [await connect(host.url("/io")) for _ in range(100)]
            try:
                started = time.monotonic()
                for ws in others:
                    await ws.send(json.dumps({"type": "ping", "id": 9}))
                replies = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for ws in others]
                elapsed = time.monotonic() - started
                assert all(r == {"type": "ack", "received": True, "id": 9} for r in replies)
                # Not a speed assertion: the other clients were answered while the first call
                # was still held (it is released only below).
                assert not backend.event("first").is_set() and elapsed < 10
            finally:
                for ws in others:
                    await ws.close()
            backend.release("second")
            backend.release("first")
            got = [json.loads(await asyncio.wait_for(waiting.recv(), 10)) for _ in range(3)]
            assert [m["id"] for m in got] == [1, 2, 3]
            assert json.loads(got[0]["body"]) == {"released": "/hold/first"}
            assert got[2]["type"] == "ack"

    run(scenario())


def test_lua_timeout_cancels_the_call_and_fails_that_message_only(tmp_path, backend):
    (tmp_path / "io.lua").write_text(SCRIPT)
    process = MoongateProcess(tmp_path, "--allow-net", "127.0.0.1", "--lua-timeout", "1").start()
    try:

        async def scenario():
            async with connect(process.url("/io")) as ws:
                got = await ask(ws, {"type": "fetch", "url": backend.url("/hold/forever"), "timeout": 30, "id": 5})
                assert got == {"type": "error", "error": "handler timed out", "id": 5}
                assert (await ask(ws, {"type": "ping", "id": 6}))["id"] == 6

        run(scenario())
        process.wait_for_log(lambda l: "--lua-timeout" in l and "kind=timeout" in l, timeout=5, what="the timeout logged")
    finally:
        process.stop()


def test_a_reload_cancels_a_waiting_call_and_keeps_the_connection(host, backend, tmp_path):
    async def scenario():
        async with connect(host.url("/io")) as ws:
            await ws.send(json.dumps({"type": "fetch", "url": backend.url("/hold/reload"), "id": 1}))
            await ws.send(json.dumps({"type": "ping", "id": 2}))
            # Wait until the call reached the backend, then change the script and reload.
            deadline = time.monotonic() + 10
            while not any(path == "/hold/reload" for _, path, _ in backend.requests):
                assert time.monotonic() < deadline, "the call never reached the backend"
                await asyncio.sleep(0.02)
            mark = host.log_mark()
            (tmp_path / "io.lua").write_text(SCRIPT.replace('"fetched"', '"fetched again"'))
            host.process.send_signal(signal.SIGHUP)
            cancelled = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert cancelled["id"] == 1 and cancelled["type"] == "error" and "cancelled" in cancelled["error"]
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["id"] == 2
            host.wait_for_log(lambda l: "reload" in l.lower(), timeout=10, since=mark, what="the reload")
            again = await ask(ws, {"type": "fetch", "url": backend.url("/json")})
            assert again["type"] == "fetched again"
            backend.release("reload")

    run(scenario())


def test_sigterm_with_calls_waiting_closes_clients_cleanly_and_exits(tmp_path, backend):
    (tmp_path / "io.lua").write_text(SCRIPT)
    process = MoongateProcess(tmp_path, "--allow-net", "127.0.0.1").start()

    async def scenario():
        async with connect(process.url("/io")) as ws:
            await ws.send(json.dumps({"type": "fetch", "url": backend.url("/hold/term")}))
            deadline = time.monotonic() + 10
            while not any(path == "/hold/term" for _, path, _ in backend.requests):
                assert time.monotonic() < deadline, "the call never reached the backend"
                await asyncio.sleep(0.02)
            process.process.send_signal(signal.SIGTERM)
            with pytest.raises(Exception):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            return ws.close_code

    assert run(scenario()) == 1001
    assert process.process.wait(timeout=10) == 0
    backend.release("term")


def test_io_while_the_script_loads_is_a_clear_load_error(tmp_path):
    (tmp_path / "bad.lua").write_text('local r = http.get("http://127.0.0.1:1/")\nendpoint { path = "/bad" }\n')
    process = MoongateProcess(tmp_path, "--allow-net", "*")
    with pytest.raises(Exception):
        process.start(timeout=15)
    assert "bad.lua:1" in process.log_text() and "inside a callback" in process.log_text()
