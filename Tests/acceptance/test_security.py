"""Who may connect: the authorize hook, allowed origins, connection limits, the handshake timeout.
Each test drives the built binary over real sockets; refusals are checked by their HTTP status."""

import asyncio
import json
import socket
import time

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from hostile_support import Host

SCRIPT = r"""
endpoint {
  path = "/secure",
  authorize = function(req)
    local token = req.query.token or (req.headers.authorization or ""):match("^Bearer (.+)$")
    if token == "good" then return true, { user = "ada", role = "admin", from = req.remote } end
    if token == "boom" then error("kaboom") end
    if token == "spin" then while true do end end
    if token == nil then return false, 401, "token required" end
    return false, "bad token"
  end,
  initial = function(conn) return { type = "hello", user = conn.user.user, role = conn.data.auth.role } end,
  on = { who = function(conn) return { type = "you", user = conn.user.user } end },
}
endpoint { path = "/partner", origins = { "https://partner.example" }, initial = { type = "hi" } }
endpoint { path = "/open", initial = { type = "hi" } }
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    scripts = tmp_path_factory.mktemp("security")
    (scripts / "security.lua").write_text(SCRIPT)
    server = Host(
        scripts,
        "--handshake-timeout", "1",
        "--max-connections-per-address", "5",
        "--lua-budget", "2000000",
    ).start()
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.log_text()[-4000:]


def first_message(url, **options):
    async def scenario():
        async with websockets.connect(url, open_timeout=5, **options) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    return asyncio.run(scenario())


def refusal_status(url, **options):
    with pytest.raises(InvalidStatus) as refused:
        first_message(url, **options)
    return refused.value.response.status_code, refused.value.response.body


def test_authorized_client_gets_its_identity_in_lua(host):
    assert first_message(host.url("/secure?token=good")) == {"type": "hello", "user": "ada", "role": "admin"}
    bearer = first_message(host.url("/secure"), additional_headers={"Authorization": "Bearer good"})
    assert bearer["user"] == "ada"


def test_identity_survives_for_the_connections_messages(host):
    async def scenario():
        async with websockets.connect(host.url("/secure?token=good")) as ws:
            await asyncio.wait_for(ws.recv(), 5)
            await ws.send(json.dumps({"type": "who"}))
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    assert asyncio.run(scenario()) == {"type": "you", "user": "ada"}


def test_missing_token_is_401_with_the_reason(host):
    status, body = refusal_status(host.url("/secure"))
    assert status == 401
    assert b"token required" in body


def test_wrong_token_is_403(host):
    status, body = refusal_status(host.url("/secure?token=nope"))
    assert (status, body.strip()) == (403, b"bad token")


def test_errors_and_runaway_loops_in_authorize_deny(host):
    mark = host.log_mark()
    assert refusal_status(host.url("/secure?token=boom"))[0] == 403
    host.wait_for_log(lambda line: "kaboom" in line and "security.lua:7" in line, timeout=5, since=mark)
    assert refusal_status(host.url("/secure?token=spin"))[0] == 403
    # The endpoint keeps serving afterwards.
    assert first_message(host.url("/secure?token=good"))["user"] == "ada"


def test_foreign_origins_are_refused_same_origin_and_non_browsers_are_not(host):
    assert refusal_status(host.url("/open"), origin="https://evil.example")[0] == 403
    assert first_message(host.url("/open"), origin=f"http://127.0.0.1:{host.port}") == {"type": "hi"}
    assert first_message(host.url("/open")) == {"type": "hi"}


def test_an_endpoint_can_list_its_own_origins(host):
    assert first_message(host.url("/partner"), origin="https://partner.example") == {"type": "hi"}
    assert refusal_status(host.url("/partner"), origin=f"http://127.0.0.1:{host.port}")[0] == 403


def test_connections_per_address_are_limited(host):
    async def scenario():
        open_sockets = [await websockets.connect(host.url("/open")) for _ in range(5)]
        try:
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(host.url("/open"))
            return refused.value.response.status_code
        finally:
            for ws in open_sockets:
                await ws.close()

    assert asyncio.run(scenario()) == 429


def test_a_handshake_that_never_completes_is_closed(host):
    sock = socket.create_connection(("127.0.0.1", host.port))
    try:
        sock.settimeout(5)
        started = time.monotonic()
        sock.sendall(b"GET /open HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 4
    finally:
        sock.close()


def test_readyz_reports_ready_once_listening(host):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{host.port}/readyz", timeout=5) as response:
        assert (response.status, response.read()) == (200, b"ready\n")


JWT_SCRIPT = r"""
return endpoint {
  path = "/me",
  authorize = function(req)
    local claims, why = jwt.verify(req.query.token)
    if not claims then return false, 401, why end
    return true, claims
  end,
  initial = function(conn) return { type = "me", sub = conn.user.sub } end,
}
"""


def jwt_token(claims, secret=b"jwt-secret", algorithm="HS256"):
    import base64
    import hashlib
    import hmac

    def encode(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = encode(json.dumps({"alg": algorithm, "typ": "JWT"}).encode())
    payload = encode(json.dumps(claims).encode())
    signature = encode(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


def test_jwt_tokens_are_verified_by_the_host(tmp_path):
    import os

    (tmp_path / "me.lua").write_text(JWT_SCRIPT)
    host = Host(tmp_path, env={**os.environ, "MOONGATE_JWT_SECRET": "jwt-secret"}).start()
    try:
        url = host.url("/me?token=")
        valid = jwt_token({"sub": "ada", "exp": time.time() + 60})
        assert first_message(url + valid) == {"type": "me", "sub": "ada"}

        expired = jwt_token({"sub": "ada", "exp": time.time() - 300})
        assert refusal_status(url + expired) == (401, b"token expired\n")

        header, _, signature = valid.split(".")
        import base64

        forged = base64.urlsafe_b64encode(json.dumps({"sub": "eve"}).encode()).rstrip(b"=").decode()
        assert refusal_status(url + f"{header}.{forged}.{signature}") == (401, b"bad signature\n")
        assert refusal_status(url + jwt_token({"sub": "ada"}, secret=b"guess")) == (401, b"bad signature\n")
        assert refusal_status(url + jwt_token({"sub": "ada"}, algorithm="none"))[0] == 401
        assert refusal_status(url + "not-a-token") == (401, b"malformed token\n")
    finally:
        assert host.stop() == 0


def make_certificate(directory, name):
    import subprocess

    certificate, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(certificate), "-subj", f"/CN={name}",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return certificate, key


def test_tls_serves_wss_and_https_to_verifying_clients_and_reloads_on_sighup(tmp_path):
    import shutil
    import signal
    import ssl
    import urllib.request

    first_cert, first_key = make_certificate(tmp_path, "first")
    second_cert, second_key = make_certificate(tmp_path, "second")
    served_cert, served_key = tmp_path / "served.pem", tmp_path / "served.key"
    shutil.copy(first_cert, served_cert)
    shutil.copy(first_key, served_key)
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "open.lua").write_text('return endpoint { path = "/open", initial = { type = "hi" } }\n')
    host = Host(scripts, "--tls-cert", served_cert, "--tls-key", served_key).start()
    try:
        assert any("listening on wss://" in line for line in host.lines)
        trusting_first = ssl.create_default_context(cafile=str(first_cert))
        wss = f"wss://127.0.0.1:{host.port}/open"
        assert first_message(wss, ssl=trusting_first) == {"type": "hi"}
        with urllib.request.urlopen(f"https://127.0.0.1:{host.port}/healthz", context=trusting_first, timeout=5) as response:
            assert response.read() == b"ok\n"
        with pytest.raises(Exception):
            first_message(wss, ssl=ssl.create_default_context())  # a client that trusts nothing here

        shutil.copy(second_cert, served_cert)
        shutil.copy(second_key, served_key)
        mark = host.log_mark()
        host.process.send_signal(signal.SIGHUP)
        host.wait_for_log(lambda line: "reloaded scripts" in line, timeout=10, since=mark)
        assert any("TLS certificate reloaded" in line for line in host.lines_since(mark))
        assert first_message(wss, ssl=ssl.create_default_context(cafile=str(second_cert))) == {"type": "hi"}
    finally:
        assert host.stop() == 0


def test_an_admin_listener_takes_metrics_off_the_public_port(tmp_path):
    import re
    import urllib.error
    import urllib.request

    (tmp_path / "open.lua").write_text('return endpoint { path = "/open", initial = { type = "hi" } }\n')
    host = Host(tmp_path, "--admin-port", "0").start()
    try:
        line = host.wait_for_log(lambda l: "admin listening on" in l, timeout=5)
        admin_port = int(re.search(r"admin listening on http://127\.0\.0\.1:(\d+)", line).group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as response:
            assert response.status == 200 and b"moongate_" in response.read()
        with pytest.raises(urllib.error.HTTPError) as public:
            urllib.request.urlopen(f"http://127.0.0.1:{host.port}/metrics", timeout=5)
        assert public.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as admin_only:
            urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/sessions/x", timeout=5)
        assert admin_only.value.code == 404
        assert first_message(host.url("/open")) == {"type": "hi"}
    finally:
        assert host.stop() == 0


def test_a_flooding_client_is_closed_with_1008_and_others_are_not(tmp_path):
    (tmp_path / "open.lua").write_text('return endpoint { path = "/open", initial = { type = "hi" } }\n')
    host = Host(tmp_path, "--max-message-rate", "50").start()
    try:
        async def scenario():
            async with websockets.connect(host.url("/open")) as flooder, websockets.connect(host.url("/open")) as calm:
                await flooder.recv()
                await calm.recv()
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    for n in range(500):
                        await flooder.send(json.dumps({"type": "x", "id": n}))
                    while True:
                        await asyncio.wait_for(flooder.recv(), 5)
                await calm.send(json.dumps({"type": "still", "id": 1}))
                reply = json.loads(await asyncio.wait_for(calm.recv(), 5))
                return closed.value.rcvd, reply

        close, reply = asyncio.run(scenario())
        assert (close.code, close.reason) == (1008, "message rate limit exceeded")
        assert reply == {"type": "ack", "received": True, "id": 1}
    finally:
        assert host.stop() == 0
