"""Helpers for test_sessions.py: a `moongate serve` process, the sessions HTTP API over urllib,
and a WebSocket session client that reads with deadlines.

Every wait here is bounded and waits on something observable (a log line, a message, a close,
an HTTP answer). Nothing sleeps to synchronise.
"""

import asyncio
import json
import time
import urllib.error
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from moongate_process import MoongateProcess

# How long any single expected message, close or HTTP answer may take.
STEP_TIMEOUT = 5.0


class Host(MoongateProcess):
    """A moongate process with helpers for the sessions HTTP API."""

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

from hostile_support import CLOSE, TEXT, RawClient as FrameClient, frame  # noqa: E402, F401 (CLOSE and TEXT are re-exported)


def masked_frame(opcode, payload=b""):
    """One masked, final client frame."""
    return frame(opcode, payload)


class RawClient(FrameClient):
    """A raw client already upgraded to `path`, reading (opcode, payload) frames."""

    def __init__(self, port, path, timeout=STEP_TIMEOUT):
        super().__init__(port, timeout=timeout)
        self.upgrade(path, port, timeout)

    def read_frame(self, timeout=STEP_TIMEOUT):
        _, _, opcode, payload = super().read_frame(timeout)
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
