"""`jwt.verify` with provider keys (`--jwks` file or URL) and with the HS256 secret, over real
WebSocket clients of a real `moongate serve`.

Keys and signatures come from the `openssl` command-line tool (HS256 from Python's hmac): an RSA
2048 key signs RS256, a P-256 key signs ES256 (openssl's DER signature turned into raw r||s).

Run: python3 -m pytest -q Tests/acceptance/test_script_jwt.py   (MOONGATE_BIN overrides the binary)
"""

import asyncio
import base64
import hashlib
import hmac
import http.server
import json
import os
import subprocess
import threading
import time

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from moongate_process import MOONGATE, MoongateProcess
from test_metrics import scrape, value

SECRET = "hs256-secret-for-the-tests"

SCRIPT = r"""
endpoint {
  path = "/jwt",
  on = {
    verify = function(conn, msg)
      local claims, reason = jwt.verify(msg.token, msg.options)
      if claims == nil then return { type = "refused", reason = reason } end
      return { type = "claims", claims = claims }
    end,
  },
}
endpoint {
  path = "/me",
  authorize = function(req)
    local claims, why = jwt.verify(req.query.token, { audience = "moongate" })
    if not claims then return false, 401, why end
    return true, claims
  end,
  initial = function(conn) return { type = "me", user = conn.user } end,
}
"""


def openssl(*args, stdin=None):
    result = subprocess.run(["openssl", *map(str, args)], input=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_key(path, kind):
    if kind == "RSA":
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)
    else:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    return path


def rsa_jwk(key, kid, use="sig"):
    modulus = openssl("rsa", "-in", key, "-noout", "-modulus").decode().strip().split("=", 1)[1]
    return {"kty": "RSA", "kid": kid, "use": use, "alg": "RS256", "n": b64url(bytes.fromhex(modulus)), "e": "AQAB"}


def ec_jwk(key, kid):
    point = openssl("ec", "-in", key, "-pubout", "-outform", "DER")[-65:]
    assert point[0] == 0x04, "an uncompressed point"
    return {"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256", "x": b64url(point[1:33]), "y": b64url(point[33:])}


def raw_ecdsa(der, size=32):
    """openssl's DER `SEQUENCE { INTEGER r, INTEGER s }` as the JWS form r||s."""
    assert der[0] == 0x30
    at = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    raw = b""
    for _ in range(2):
        assert der[at] == 0x02
        length = der[at + 1]
        raw += der[at + 2 : at + 2 + length].lstrip(b"\0").rjust(size, b"\0")
        at += 2 + length
    return raw


def token(claims, alg, key=None, kid=None, secret=SECRET):
    header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}".encode()
    if alg == "RS256":
        signature = openssl("dgst", "-sha256", "-sign", key, stdin=signing_input)
    elif alg == "ES256":
        signature = raw_ecdsa(openssl("dgst", "-sha256", "-sign", key, stdin=signing_input))
    elif alg == "HS256":
        signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    else:
        signature = b""
    return f"{signing_input.decode()}.{b64url(signature)}"


def claims(**extra):
    return {"sub": "ada", "iss": "https://id.example", "aud": "moongate", "exp": int(time.time()) + 300, **extra}


class Keys:
    """An RSA and an EC key and the key set that publishes them (plus an encryption-only key)."""

    def __init__(self, directory):
        self.rsa = new_key(directory / "rsa.pem", "RSA")
        self.ec = new_key(directory / "ec.pem", "EC")
        self.set = {"keys": [rsa_jwk(self.rsa, "rsa-1"), ec_jwk(self.ec, "ec-1"), rsa_jwk(self.rsa, "rsa-enc", use="enc")]}
        self.jwks = directory / "jwks.json"
        self.jwks.write_text(json.dumps(self.set))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


def start(scripts, *args, secret=None):
    (scripts / "jwt.lua").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "MOONGATE_JWT_SECRET"}
    if secret is not None:
        env["MOONGATE_JWT_SECRET"] = secret
    return MoongateProcess(scripts, *args, env=env).start()


@pytest.fixture(scope="module")
def host(tmp_path_factory, keys):
    process = start(tmp_path_factory.mktemp("jwt"), "--jwks", keys.jwks, secret=SECRET)
    yield process
    assert process.stop() == 0, process.log_text()[-4000:]


def verify(host, jwt, **options):
    """The reply of the script's `verify` handler for this token."""

    async def scenario():
        async with websockets.connect(host.url("/jwt"), open_timeout=10) as ws:
            message = {"type": "verify", "token": jwt, **({"options": options} if options else {})}
            await ws.send(json.dumps(message))
            return json.loads(await asyncio.wait_for(ws.recv(), 20))

    return asyncio.run(scenario())


def test_rs256_and_es256_tokens_give_back_their_claims(host, keys):
    """Valid RS256 and ES256 tokens: the whole claims table reaches the script, custom claims too."""
    rs = claims(role="admin", groups=["ops", "dev"], level=3)
    assert verify(host, token(rs, "RS256", keys.rsa, "rsa-1")) == {"type": "claims", "claims": rs}
    es = claims(sub="grace", tenant="blue")
    assert verify(host, token(es, "ES256", keys.ec, "ec-1"), audience="moongate", issuer="https://id.example") == {
        "type": "claims",
        "claims": es,
    }
    # Inside the 30 s leeway, an `exp` just past still verifies.
    recent = claims(exp=int(time.time()) - 10)
    assert verify(host, token(recent, "RS256", keys.rsa, "rsa-1"))["claims"] == recent


def tampered(keys):
    header, _, signature = token(claims(), "RS256", keys.rsa, "rsa-1").split(".")
    return f"{header}.{b64url(json.dumps(claims(role='admin')).encode())}.{signature}"


REFUSALS = {
    "expired": (lambda k: token(claims(exp=int(time.time()) - 120), "RS256", k.rsa, "rsa-1"), {}, "token expired"),
    "not yet valid": (lambda k: token(claims(nbf=int(time.time()) + 300), "ES256", k.ec, "ec-1"), {}, "token not yet valid"),
    "wrong audience": (lambda k: token(claims(), "RS256", k.rsa, "rsa-1"), {"audience": "billing"}, "wrong audience"),
    "wrong issuer": (lambda k: token(claims(), "ES256", k.ec, "ec-1"), {"issuer": "https://evil.example"}, "wrong issuer"),
    "unknown kid": (lambda k: token(claims(), "RS256", k.rsa, "rsa-9"), {}, "unknown key"),
    "encryption key": (lambda k: token(claims(), "RS256", k.rsa, "rsa-enc"), {}, "unknown key"),
    "tampered payload": (tampered, {}, "bad signature"),
    "alg none": (lambda k: token(claims(), "none"), {}, "unsupported algorithm none"),
    "no kid": (lambda k: token(claims(), "RS256", k.rsa), {}, "token has no kid"),
    "hs256 wrong secret": (lambda k: token(claims(), "HS256", secret="guessed"), {}, "bad signature"),
    "malformed": (lambda k: "not.a-token", {}, "malformed token"),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_each_refusal_has_its_reason(host, keys, case):
    """Every way a token can be wrong comes back as nil and its own reason."""
    make, options, reason = REFUSALS[case]
    assert verify(host, make(keys), **options) == {"type": "refused", "reason": reason}


def test_a_token_cannot_pick_another_algorithm_for_a_key(host, keys):
    """An ES256 signature presented under the RSA key's kid is refused, never accepted."""
    confused = token(claims(), "ES256", keys.ec, "rsa-1")
    assert verify(host, confused)["type"] == "refused"


def test_hs256_uses_the_secret_from_the_environment(host):
    """HS256 still works next to the key set, with $MOONGATE_JWT_SECRET."""
    hs = claims(scope="read")
    assert verify(host, token(hs, "HS256")) == {"type": "claims", "claims": hs}


def test_verifications_are_counted_in_metrics(host, keys):
    """/metrics counts jwt calls by outcome."""
    before = scrape(host)
    for _ in range(2):
        assert verify(host, token(claims(), "ES256", keys.ec, "ec-1"))["type"] == "claims"
    assert verify(host, tampered(keys))["type"] == "refused"
    after = scrape(host)
    for outcome, count in (("ok", 2), ("refused", 1)):
        name, labels = "moongate_script_io_calls_total", {"kind": "jwt", "outcome": outcome}
        assert value(after, name, **labels) - value(before, name, **labels) == count


def test_authorize_lets_in_a_valid_token_and_refuses_others_with_401(host, keys):
    """`authorize` with jwt.verify: the claims become conn.user; a bad token is an HTTP 401."""
    user = claims(name="Ada Lovelace")

    async def first_message(jwt):
        async with websockets.connect(host.url("/me?token=" + jwt), open_timeout=10) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    assert asyncio.run(first_message(token(user, "RS256", keys.rsa, "rsa-1"))) == {"type": "me", "user": user}
    for bad in (token(claims(aud="elsewhere"), "ES256", keys.ec, "ec-1"), tampered(keys)):
        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(first_message(bad))
        assert refused.value.response.status_code == 401


def test_a_rotated_key_verifies_without_a_restart(tmp_path, keys):
    """A key written into the set later is found when a token names its kid; the old one is gone."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_jwk(keys.rsa, "rsa-1")]}))
    (tmp_path / "scripts").mkdir()
    process = start(tmp_path / "scripts", "--jwks", jwks, "--log-level", "debug")
    try:
        process.wait_for_log(lambda l: "jwt: 1 keys from" in l, timeout=10, what="the first load of the set")
        old = token(claims(), "RS256", keys.rsa, "rsa-1")
        assert verify(process, old)["type"] == "claims"
        rotated = new_key(tmp_path / "ec-2.pem", "EC")
        fresh_claims = claims(sub="rotated")
        fresh = token(fresh_claims, "ES256", rotated, "ec-2")
        mark = process.log_mark()
        staging = tmp_path / "jwks.json.new"
        staging.write_text(json.dumps({"keys": [ec_jwk(rotated, "ec-2")]}))
        os.replace(staging, jwks)
        # The set reloads for an unknown kid at most once a second: poll the reply, bounded.
        deadline = time.monotonic() + 10
        while (reply := verify(process, fresh))["type"] != "claims":
            assert reply == {"type": "refused", "reason": "unknown key"}
            assert time.monotonic() < deadline, "the new key was never picked up"
            time.sleep(0.2)
        assert reply["claims"] == fresh_claims
        process.wait_for_log(lambda l: '"ec-2"' in l and "jwt: 1 keys" in l, timeout=5, since=mark, what="the reload")
        assert verify(process, old) == {"type": "refused", "reason": "unknown key"}
    finally:
        assert process.stop() == 0


class KeySetServer:
    """Serves one JSON document over HTTP and records the paths asked for."""

    def __init__(self, document):
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = json.dumps(document).encode()
                self.send_response(200 if self.path == "/.well-known/jwks.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/.well-known/jwks.json"


def test_the_key_set_can_come_from_a_url(tmp_path, keys):
    """--jwks URL: fetched over HTTP (no --allow-net needed); without the secret HS256 says why."""
    provider = KeySetServer(keys.set)
    try:
        process = start(tmp_path, "--jwks", provider.url)
        try:
            assert "/.well-known/jwks.json" in provider.requests
            es = claims(via="url")
            assert verify(process, token(es, "ES256", keys.ec, "ec-1")) == {"type": "claims", "claims": es}
            hs = verify(process, token(claims(), "HS256"))
            assert hs == {"type": "refused", "reason": "HS256 tokens need the secret in $MOONGATE_JWT_SECRET"}
        finally:
            assert process.stop() == 0
    finally:
        provider.http.shutdown()


@pytest.mark.parametrize("problem", ["missing file", "not a key set", "no signing key"])
def test_a_bad_key_set_stops_the_host_at_start(tmp_path, keys, problem):
    """A --jwks that cannot be used is an exit 1 at start, with a message naming --jwks."""
    jwks = tmp_path / "jwks.json"
    if problem == "not a key set":
        jwks.write_text(json.dumps({"hello": "world"}))
    elif problem == "no signing key":
        jwks.write_text(json.dumps({"keys": [rsa_jwk(keys.rsa, "rsa-enc", use="enc")]}))
    (tmp_path / "jwt.lua").write_text(SCRIPT)
    result = subprocess.run(
        [str(MOONGATE), "serve", str(tmp_path), "--port", "0", "--jwks", str(jwks)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert f"--jwks {jwks}" in result.stderr
    assert "listening on" not in result.stderr
