"""Scripts that wait on HTTP (#15): `http.get`/`http.post`/`http.request` against a real HTTP
server started here, over real WebSocket clients of a real `moongate serve`.

The server below answers JSON, echoes POSTs, redirects, sends large bodies, and holds a response
until the test releases it (an event, not a sleep), so "still waiting" is a state the test controls.

Run: python3 -m pytest -q Tests/acceptance/test_script_http.py   (MOONGATE_BIN overrides the binary)
"""

import asyncio
import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
from websockets.asyncio.client import connect

from moongate_process import MoongateProcess
from test_metrics import scrape, value

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
    own = function(conn, msg)
      -- The host's own listener: reachable without --allow-net.
      local url = server_url(msg.path)
      local response, reason = http.get(url)
      if response == nil then return { type = "failed", reason = reason } end
      return { type = "own", url = url, status = response.status, body = response.body }
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
    """A threaded HTTP server; `/hold/NAME` answers only once `release(NAME)` is called;
    `/goto?to=URL` redirects to URL; `/chain/N` redirects N times before answering. Given an
    `ssl.SSLContext`, it serves HTTPS."""

    def __init__(self, tls=None):
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
                if self.path.startswith("/goto?") or self.path.startswith("/chain/"):
                    if self.path.startswith("/goto?"):
                        location = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["to"][0]
                    elif int(self.path[len("/chain/"):]) > 0:
                        location = f"/chain/{int(self.path[len('/chain/'):]) - 1}"
                    else:
                        return self.answer({"path": self.path})
                    self.send_response(302)
                    self.send_header("Location", location)
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
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def event(self, name):
        return self.held.setdefault(name, threading.Event())

    def release(self, name):
        self.event(name).set()

    def url(self, path):
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

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


# HTTPS, redirects across hosts, the host's own listener, /metrics --------------------------------


def openssl(*args):
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()


class ThrowawayCA:
    """A certificate authority made with openssl for one test, and server certificates it signs."""

    def __init__(self, directory):
        self.directory = directory
        self.cert = directory / "ca.pem"
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", directory / "ca.key", "-out", self.cert, "-days", "2", "-subj", "/CN=Moongate Test CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def server_context(self, name, subject_alt_name):
        """An `ssl.SSLContext` serving a certificate for `subject_alt_name`, signed by this CA."""
        key, csr, cert = (self.directory / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(f"subjectAltName={subject_alt_name}\nextendedKeyUsage=serverAuth\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
                "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.directory / "ca.key", "-CAcreateserial",
                "-out", cert, "-days", "2", "-extfile", extensions)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return context


def serve(tmp_path, *args):
    """A host on SCRIPT with these options (and no $SSL_CERT_FILE from the environment)."""
    scripts = tmp_path / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / "io.lua").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
    return MoongateProcess(scripts, *args, env=env).start()


def ask_once(process, message):
    async def scenario():
        async with connect(process.url("/io")) as ws:
            return await ask(ws, message)

    return run(scenario())


def test_https_trusts_a_private_ca_only_with_ca_file(tmp_path):
    """A server signed by a private CA: a TLS error without --ca-file, a response with it."""
    ca = ThrowawayCA(tmp_path)
    secure = Backend(tls=ca.server_context("server", "IP:127.0.0.1"))
    try:
        process = serve(tmp_path, "--allow-net", "127.0.0.1")
        try:
            untrusted = ask_once(process, {"type": "fetch", "url": secure.url("/json")})
            assert untrusted["type"] == "failed" and untrusted["reason"].startswith("TLS error"), untrusted
        finally:
            assert process.stop() == 0
        assert secure.requests == [], "no request may go over an untrusted connection"
        process = serve(tmp_path, "--allow-net", "127.0.0.1", "--ca-file", ca.cert)
        try:
            trusted = ask_once(process, {"type": "fetch", "url": secure.url("/json")})
            assert trusted["type"] == "fetched" and trusted["status"] == 200, trusted
            assert json.loads(trusted["body"]) == {"path": "/json", "x-test": "yes"}
        finally:
            assert process.stop() == 0
    finally:
        secure.close()


def test_https_checks_the_name_even_for_a_trusted_ca(tmp_path):
    """A certificate from a trusted CA but for another name is a TLS error, not a response."""
    ca = ThrowawayCA(tmp_path)
    elsewhere = Backend(tls=ca.server_context("elsewhere", "DNS:elsewhere.example"))
    try:
        process = serve(tmp_path, "--allow-net", "127.0.0.1", "--ca-file", ca.cert)
        try:
            got = ask_once(process, {"type": "fetch", "url": elsewhere.url("/json")})
            assert got["type"] == "failed" and got["reason"].startswith("TLS error"), got
        finally:
            assert process.stop() == 0
        assert elsewhere.requests == []
    finally:
        elsewhere.close()


def test_a_redirect_to_a_host_that_is_not_allowed_is_refused(tmp_path, backend):
    """Each redirect hop passes --allow-net: a hop to a port not allowed fails and is never sent."""
    other = Backend()
    try:
        process = serve(tmp_path, "--allow-net", f"127.0.0.1:{backend.port}")
        try:
            target = other.url("/json")
            got = ask_once(process, {"type": "fetch", "url": backend.url("/goto?to=" + urllib.parse.quote(target, safe=""))})
            assert got["type"] == "failed", got
            assert f"--allow-net 127.0.0.1:{other.port}" in got["reason"]
            assert [path for _, path, _ in backend.requests] == ["/goto?to=" + urllib.parse.quote(target, safe="")]
        finally:
            assert process.stop() == 0
        assert other.requests == [], "the host that is not allowed was never asked"
    finally:
        other.close()


def test_redirects_are_followed_five_times_and_no_more(host, backend):
    """Five redirects reach the answer; a sixth is not followed."""
    five = ask_once(host, {"type": "fetch", "url": backend.url("/chain/5")})
    assert five["status"] == 200 and json.loads(five["body"]) == {"path": "/chain/0"}
    mark = len(backend.requests)
    six = ask_once(host, {"type": "fetch", "url": backend.url("/chain/6")})
    assert six.get("status") != 200
    # The first request and five redirects, never a seventh.
    assert [path for _, path, _ in backend.requests[mark:]] == [f"/chain/{n}" for n in range(6, 0, -1)]


def test_the_hosts_own_listener_needs_no_allow_net(tmp_path, backend):
    """server_url() reaches the host itself with no --allow-net; other servers stay refused."""
    process = serve(tmp_path)
    try:
        healthz = ask_once(process, {"type": "own", "path": "/healthz"})
        assert healthz["type"] == "own" and healthz["status"] == 200, healthz
        assert healthz["url"] == process.http_url("/healthz")
        assert healthz["body"] == urllib.request.urlopen(process.http_url("/healthz"), timeout=5).read().decode()
        # Anything else on the same address is still refused.
        other = ask_once(process, {"type": "fetch", "url": backend.url("/json")})
        assert other["type"] == "failed" and "--allow-net 127.0.0.1" in other["reason"]
    finally:
        assert process.stop() == 0
    assert backend.requests == []


def test_metrics_count_http_calls_by_outcome_and_time_them(tmp_path, backend):
    """/metrics counts http calls as ok and refused, as made here, and times every one."""
    process = serve(tmp_path, "--allow-net", f"127.0.0.1:{backend.port}")
    try:
        before = scrape(process)
        oks = [{"type": "fetch", "url": backend.url(f"/json?n={n}")} for n in range(3)]
        oks.append({"type": "own", "path": "/healthz"})
        refusals = [
            {"type": "fetch", "url": f"http://127.0.0.1:{closed_port()}/"},
            {"type": "fetch", "url": f"http://localhost:{backend.port}/json"},
            {"type": "fetch", "url": backend.url("/goto?to=" + urllib.parse.quote(f"http://127.0.0.1:{closed_port()}/x", safe=""))},
        ]
        for message in oks:
            assert ask_once(process, message)["status"] == 200
        for message in refusals:
            assert "--allow-net" in ask_once(process, message)["reason"]
        after = scrape(process)
    finally:
        assert process.stop() == 0

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("moongate_script_io_calls_total", kind="http", outcome="ok") == len(oks)
    assert grew("moongate_script_io_calls_total", kind="http", outcome="refused") == len(refusals)
    calls = len(oks) + len(refusals)
    assert grew("moongate_script_io_duration_seconds_count", kind="http") == calls
    assert grew("moongate_script_io_duration_seconds_bucket", kind="http", le="+Inf") == calls
    assert grew("moongate_script_io_duration_seconds_sum", kind="http") > 0
    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for (name, labels), count in after.items()
        if name == "moongate_script_io_duration_seconds_bucket" and dict(labels).get("kind") == "http"
    )
    assert len(buckets) > 2 and [count for _, count in buckets] == sorted(count for _, count in buckets)
    in_flight = [count for (name, _), count in after.items() if name == "moongate_script_io_in_flight"]
    assert in_flight and all(count == 0 for count in in_flight)
