"""Helpers for test_sessions.py: a `moongate serve` process, the sessions HTTP API over urllib,
and a WebSocket session client that reads with deadlines.

Every wait here is bounded and waits on something observable (a log line, a message, a close,
an HTTP answer). Nothing sleeps to synchronise.
"""

import asyncio
import base64
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parents[2]
MOONGATE = Path(os.environ.get("MOONGATE_BIN", REPO / ".build" / "debug" / "moongate"))
LISTENING = re.compile(r"listening on ws://127\.0\.0\.1:(\d+)")

# How long any single expected message, close or HTTP answer may take.
STEP_TIMEOUT = 5.0


class Host:
    """One `moongate serve DIR --port 0 ...` process; its stderr is read by a thread into `lines`."""

    def __init__(self, scripts, *args, env=None):
        self.scripts = Path(scripts)
        self.args = [str(a) for a in args]
        self.env = env
        self.lines = []
        self.changed = threading.Condition()
        self.port = None
        self.process = None

    def start(self, timeout=30.0):
        if not MOONGATE.exists():
            raise RuntimeError(f"no moongate binary at {MOONGATE}: run `swift build` or set MOONGATE_BIN")
        self.process = subprocess.Popen(
            [str(MOONGATE), "serve", str(self.scripts), "--port", "0", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        line = self.wait_for_log(LISTENING.search, timeout, "the listening line")
        self.port = int(LISTENING.search(line).group(1))
        return self

    def _read_log(self):
        for raw in self.process.stderr:
            with self.changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.lines.append("<stderr closed>")
            self.changed.notify_all()

    def wait_for_log(self, predicate, timeout, what="a log line"):
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines:
                    if predicate(line):
                        return line
                if self.lines and self.lines[-1] == "<stderr closed>":
                    raise AssertionError(f"moongate exited before {what}:\n" + "\n".join(self.lines))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {what} within {timeout} s:\n" + "\n".join(self.lines[-60:]))
                self.changed.wait(remaining)

    def log_text(self):
        with self.changed:
            return "\n".join(self.lines)

    def url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"

    def http_url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self, timeout=15.0):
        """SIGTERM, then the exit code (killing the process if it ignores the signal)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"moongate ignored SIGTERM for {timeout} s:\n" + self.log_text())

    # The sessions HTTP API ------------------------------------------------------------------------

    def http(self, method, path, body=None, headers=None, timeout=STEP_TIMEOUT):
        """Returns (status, headers, decoded JSON or text). `body` may be bytes, str, or a value
        to encode as JSON."""
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        request = urllib.request.Request(self.http_url(path), data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, reply_headers, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, reply_headers, raw = error.code, error.headers, error.read()
        text = raw.decode("utf-8", "replace")
        if (reply_headers.get("Content-Type") or "").startswith("application/json"):
            return status, reply_headers, json.loads(text)
        return status, reply_headers, text

    def post_events(self, session, events, token=None):
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http("POST", f"/sessions/{session}/events", events, headers)

    def emit(self, session, events):
        """POSTs events that must be accepted; returns (epoch, seqs)."""
        status, _, body = self.post_events(session, events)
        assert status == 201, f"POST /sessions/{session}/events answered {status}: {body}"
        return body["epoch"], body["seqs"]

    def status(self, session):
        return self.http("GET", f"/sessions/{session}")


# WebSocket clients ----------------------------------------------------------------------------


async def recv_json(ws, timeout=STEP_TIMEOUT, what="a message"):
    try:
        text = await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"no {what} within {timeout} s") from None
    return json.loads(text)


async def recv_until_closed(ws, timeout=STEP_TIMEOUT):
    """Every message until the connection closes; returns (messages, close code)."""
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the connection did not close within {timeout} s")
        try:
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), remaining)))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            return messages, code
        except asyncio.TimeoutError:
            raise AssertionError(f"the connection did not close within {timeout} s") from None


async def read_events(ws, through_seq, timeout=STEP_TIMEOUT):
    """Session messages until the event with seq `through_seq` (inclusive)."""
    messages = []
    deadline = time.monotonic() + timeout
    while not messages or messages[-1].get("seq") != through_seq or messages[-1].get("type") in ("ready", "reset"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no event {through_seq} within {timeout} s; got {messages[-5:]}")
        messages.append(await recv_json(ws, remaining, f"event {through_seq}"))
    return messages


def session_connect(host, path, **kwargs):
    """A websockets client for a session endpoint (small max_queue is not wanted: replays are big)."""
    kwargs.setdefault("open_timeout", STEP_TIMEOUT)
    kwargs.setdefault("close_timeout", STEP_TIMEOUT)
    kwargs.setdefault("max_queue", None)
    return connect(host.url(path), **kwargs)


def strip_seq(event):
    return {key: value for key, value in event.items() if key != "seq"}


# A raw socket client, for what `websockets` hides (frames that follow a close frame) ---------


CLOSE = 0x8
TEXT = 0x1


def masked_frame(opcode, payload=b""):
    """One masked, final client frame."""
    if isinstance(payload, str):
        payload = payload.encode()
    key = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawClient:
    """A blocking socket speaking just enough WebSocket; every read has a deadline."""

    def __init__(self, port, path, timeout=STEP_TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            self._fill(deadline)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            raise AssertionError(f"upgrade to {path} answered {status}")

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("raw read timed out")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buffer += chunk

    def send(self, data):
        self.sock.sendall(data)

    def read_frame(self, timeout=STEP_TIMEOUT):
        """(opcode, payload) of the next server frame (servers never fragment these)."""
        deadline = time.monotonic() + timeout
        while len(self.buffer) < 2:
            self._fill(deadline)
        length, offset = self.buffer[1] & 0x7F, 2
        if length == 126:
            while len(self.buffer) < 4:
                self._fill(deadline)
            length, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif length == 127:
            while len(self.buffer) < 10:
                self._fill(deadline)
            length, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
        while len(self.buffer) < offset + length:
            self._fill(deadline)
        opcode, payload = self.buffer[0] & 0x0F, self.buffer[offset : offset + length]
        self.buffer = self.buffer[offset + length :]
        return opcode, payload

    def frames_until_eof(self, timeout=STEP_TIMEOUT):
        """Every frame until the server closes the TCP connection."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                frames.append(self.read_frame(max(deadline - time.monotonic(), 0.001)))
            except (EOFError, ConnectionResetError):
                return frames

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Ctl:
    """A client of the test scripts' /ctl endpoint: `call` sends a request with an id and returns
    the reply carrying that id; other messages (publish()ed notifications) are kept for `notice`."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.notices = []

    async def call(self, message, timeout=STEP_TIMEOUT):
        self.next_id += 1
        request_id = self.next_id
        await self.ws.send(json.dumps({**message, "id": request_id}))
        deadline = time.monotonic() + timeout
        while True:
            reply = await recv_json(self.ws, max(deadline - time.monotonic(), 0.001), f"the reply to {message}")
            if reply.get("id") == request_id:
                return reply
            self.notices.append(reply)

    async def notice(self, predicate, timeout=STEP_TIMEOUT, what="a notice"):
        deadline = time.monotonic() + timeout
        while True:
            for index, notice in enumerate(self.notices):
                if predicate(notice):
                    return self.notices.pop(index)
            self.notices.append(await recv_json(self.ws, max(deadline - time.monotonic(), 0.001), what))
