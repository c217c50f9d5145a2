"""Hostile clients and misbehaving scripts against a real `moongate serve`.

One host runs for the module (with --max-outbound-buffer 262144 --lua-memory 16) on the scripts in
SCRIPTS below; tests that wedge a script's executor for good get a host of their own. Clients are
Python `websockets`, raw sockets with hand-made frames (hostile_support.py), and a separate Python
process that is frozen with SIGSTOP.

Every wait is bounded and waits on an event (a message, a close, a log line, a process state).

Run: python3 -m pytest -q Tests/acceptance/test_hostile.py   (MOONGATE_BIN overrides the binary;
HOSTILE_FUZZ_SEED the fuzzer's seed)
"""

import asyncio
import json
import os
import queue
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from websockets.asyncio.client import connect

from hostile_support import (
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    Host,
    RawClient,
    close_payload,
    frame,
    handshake_request,
)

OUTBOUND_LIMIT = 262144
LUA_MEMORY_MIB = 16
FUZZ_SEED = int(os.environ.get("HOSTILE_FUZZ_SEED", "6455"))

# The scripts the module's host serves. ------------------------------------------------------------

SCRIPTS = {
    # Where other endpoints report what happened to their clients.
    "monitor.lua": """
return endpoint { path = "/monitor", initial = { type = "monitor" } }
""",
    # Dead-peer detection: pings every 0.5 s, a peer that has not answered within 0.5 s is dropped.
    "ticker.lua": """
local n = 0
every(0.2, function()
  n = n + 1
  broadcast({ type = "tick", n = n })
end)
return endpoint {
  path = "/ticker",
  keepalive = { ping_every = 0.5, timeout = 0.5 },
  initial = function(conn) return { type = "hello", id = conn.id } end,
  on_close = function(conn, code)
    publish("/monitor", { type = "gone", endpoint = "/ticker", id = conn.id, code = code })
  end,
}
""",
    # Slow consumers. The host raises a connection's outbound limit to twice its endpoint's
    # max_message_size (1 MiB by default), so these endpoints keep max_message_size small for
    # --max-outbound-buffer to be the limit that applies. Pings are off: only the outbound
    # limit may close anyone here.
    "flood.lua": """
local pad = string.rep("x", 2000)
return endpoint {
  path = "/flood",
  keepalive = { ping_every = 0 },
  max_message_size = 1024,
  initial = function(conn) return { type = "hello", id = conn.id } end,
  on = {
    go = function(conn, msg)
      for seq = msg.from, msg.from + msg.n - 1 do
        broadcast({ type = "m", seq = seq, pad = pad })
      end
      return { type = "done", id = msg.id }
    end,
  },
  on_close = function(conn, code)
    publish("/monitor", { type = "gone", endpoint = "/flood", id = conn.id, code = code })
  end,
}
""",
    "burst.lua": """
local pad = string.rep("x", 2000)
return endpoint {
  path = "/burst",
  keepalive = { ping_every = 0 },
  max_message_size = 1024,
  initial = function(conn) return { type = "hello", id = conn.id } end,
  on = {
    go = function(conn, msg)
      for seq = 1, msg.n do broadcast({ type = "m", seq = seq, pad = pad }) end
      return false
    end,
  },
}
""",
    # A stalled client on /sink while /pump pushes 64 KiB blocks at it: memory must stay bounded.
    "sink.lua": """
local block = string.rep("y", 65536)
endpoint {
  path = "/sink",
  keepalive = { ping_every = 0 },
  max_message_size = 1024,
  initial = function(conn) return { type = "hello", id = conn.id } end,
  on_close = function(conn, code)
    publish("/monitor", { type = "gone", endpoint = "/sink", id = conn.id, code = code })
  end,
}
endpoint {
  path = "/pump",
  on = {
    pump = function(conn, msg)
      for _ = 1, msg.n do publish("/sink", block) end
      return { type = "pumped", id = msg.id }
    end,
  },
}
""",
    "proto.lua": """
return endpoint {
  path = "/proto",
  max_message_size = 1024,
  keepalive = { ping_every = 0 },
  on_text = function(conn, text) return "got " .. #text end,
  on_binary = function(conn, data) return data end,
}
""",
    "echo.lua": """
return endpoint {
  path = "/echo",
  on_text = function(conn, text) return text end,
  on_binary = function(conn, data) return data end,
  max_message_size = 16 * 1024 * 1024,
}
""",
    "sandbox.lua": """
return endpoint {
  path = "/sandbox",
  on = {
    spin = function()
      while true do end
    end,
    hog = function()
      local t = {} ; while true do t[#t+1] = string.rep("x", 1024) end
    end,
    probe = function()
      return {
        type = "probe",
        os_execute = os.execute == nil,
        io = io == nil,
        io_open = io == nil or io.open == nil,
        -- require reads modules from the scripts folder's lib/ only, never a library or C module
        require = not pcall(require, "io") and not pcall(require, "os") and not pcall(require, "../sandbox"),
        dofile = dofile == nil,
        loadfile = loadfile == nil,
        package = package == nil,
        debug = debug == nil,
        os_exit = os.exit == nil,
        os_remove = os.remove == nil,
        bytecode_refused = load(string.dump(function() return 1 end)) == nil,
        text_load = load("return 41 + 1")() == 42,
      }
    end,
  },
}
""",
}

# Scripts that escape the instruction budget wedge their executor for good (and, with it, shutdown),
# so each test that runs one gets a host of its own, killed at the end.
ESCAPE_SCRIPTS = {
    "escape.lua": """
return endpoint {
  path = "/escape",
  keepalive = { ping_every = 0 },
  on = {
    -- Each coroutine gets a fresh instruction count, and resume() catches the budget error.
    coroutines = function()
      while true do
        coroutine.resume(coroutine.create(function() while true do end end))
      end
    end,
    -- Exponential backtracking inside one C call: no VM instruction is counted while it runs.
    pattern = function()
      return { n = string.find(string.rep("a", 40), string.rep("a?", 40) .. string.rep("a", 40)) }
    end,
  },
}
""",
    "echo.lua": SCRIPTS["echo.lua"],
}

REPLY_TIMEOUT = 5.0


def run(coroutine):
    return asyncio.run(coroutine)


def write_scripts(directory, scripts):
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in scripts.items():
        (directory / name).write_text(source.lstrip())
    return directory


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    scripts = write_scripts(tmp_path_factory.mktemp("hostile") / "scripts", SCRIPTS)
    server = Host(scripts, "--max-outbound-buffer", OUTBOUND_LIMIT, "--lua-memory", LUA_MEMORY_MIB).start()
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, f"moongate exited with {code} on SIGTERM:\n{server.log_text()[-6000:]}"


@pytest.fixture
def escape_host(tmp_path):
    scripts = write_scripts(tmp_path / "scripts", ESCAPE_SCRIPTS)
    server = Host(scripts, "--lua-budget", 1_000_000).start()
    try:
        yield server
    finally:
        # A wedged executor may keep the process from honouring SIGTERM; don't leave it spinning.
        if server.alive():
            server.process.kill()
            server.process.wait(timeout=10)


async def receive_json(ws, timeout=REPLY_TIMEOUT):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def request(ws, message, timeout=REPLY_TIMEOUT):
    await ws.send(json.dumps(message))
    return await receive_json(ws, timeout)


class Monitor:
    """A /monitor client collecting every message in the background."""

    def __init__(self, ws):
        self.ws = ws
        self.messages = []
        self.changed = asyncio.Condition()
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, host):
        ws = await connect(host.url("/monitor"))
        assert await receive_json(ws) == {"type": "monitor"}
        return cls(ws)

    async def _read(self):
        async for message in self.ws:
            async with self.changed:
                self.messages.append(json.loads(message))
                self.changed.notify_all()

    def gone(self, endpoint, ids):
        return [m for m in self.messages if m.get("type") == "gone" and m["endpoint"] == endpoint and m["id"] in ids]

    async def wait_gone(self, endpoint, connection_id, timeout):
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.gone(endpoint, {connection_id})), timeout)
        return self.gone(endpoint, {connection_id})[0]

    async def close(self):
        self.task.cancel()
        await self.ws.close()


def healthz(host):
    with urllib.request.urlopen(f"http://127.0.0.1:{host.port}/healthz", timeout=5) as response:
        return response.status, response.read()


def wait_until(predicate, timeout, interval=0.05):
    """Polls `predicate` (a process or socket state) until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# 1. Dead peer: a real process frozen with SIGSTOP -------------------------------------------------

PING_EVERY, PING_TIMEOUT = 0.5, 0.5
# Stopped just after answering a ping, the peer is found out at the next ping's deadline, at most
# ping_every + timeout later; the slack covers the close reaching the script and the monitor.
DEAD_PEER_BOUND = PING_EVERY + PING_TIMEOUT + 1.0

FROZEN_CLIENT = r"""
import sys
from websockets.sync.client import connect
with connect(sys.argv[1], ping_interval=None) as ws:
    print(ws.recv(), flush=True)
    try:
        while True:
            ws.recv()
    except Exception as error:
        print("closed", type(error).__name__, flush=True)
"""


def test_frozen_peer_is_dropped_within_ping_deadline_while_others_keep_ticking(host):
    child = subprocess.Popen(
        [sys.executable, "-c", FROZEN_CLIENT, host.url("/ticker")],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in child.stdout], daemon=True).start()
    frozen = False

    async def scenario():
        nonlocal frozen
        monitor = await Monitor.open(host)
        async with connect(host.url("/ticker")) as other:
            other_hello = await receive_json(other)
            first_line = await asyncio.to_thread(lines.get, True, 15)
            assert first_line.startswith("{"), f"frozen client: {first_line}{child.stdout.read() if child.poll() is not None else ''}"
            child_hello = json.loads(first_line)
            assert child_hello["type"] == "hello"
            child_id = child_hello["id"]

            ticks = []  # (arrival time, n) on the healthy client

            async def next_tick():
                while True:
                    message = await receive_json(other, timeout=2.0)
                    if message["type"] == "tick":
                        ticks.append((time.monotonic(), message["n"]))
                        return

            # While the child is alive and answering pings, several ping deadlines pass unharmed.
            alive_since = time.monotonic()
            while time.monotonic() - alive_since < 2 * (PING_EVERY + PING_TIMEOUT):
                await next_tick()
            assert monitor.gone("/ticker", {child_id, other_hello["id"]}) == [], "a live client was dropped"

            os.kill(child.pid, signal.SIGSTOP)
            frozen = True
            stopped_at = time.monotonic()
            gone_task = asyncio.create_task(monitor.wait_gone("/ticker", child_id, timeout=DEAD_PEER_BOUND + 3))
            while not gone_task.done():
                await next_tick()
            gone = await gone_task
            detected_after = time.monotonic() - stopped_at
            for _ in range(3):  # and the healthy client keeps ticking after the drop
                await next_tick()
            await monitor.close()
            return child_id, other_hello["id"], gone, detected_after, stopped_at, ticks, monitor

    try:
        child_id, other_id, gone, detected_after, stopped_at, ticks, monitor = run(scenario())
        print(f"frozen peer dropped {detected_after:.2f} s after SIGSTOP: {gone}")
        assert detected_after <= DEAD_PEER_BOUND, (
            f"frozen peer dropped {detected_after:.2f} s after SIGSTOP, bound {DEAD_PEER_BOUND} s"
        )
        # The socket just went away: on_close gets no close code.
        assert "code" not in gone, gone
        assert monitor.gone("/ticker", {other_id}) == [], "the healthy client was dropped"
        # Every tick from before the freeze to after the drop, none missing, none late.
        numbers = [n for _, n in ticks]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
        window = [at for at, _ in ticks if at >= stopped_at - 0.5]
        gaps = [b - a for a, b in zip(window, window[1:])]
        assert max(gaps) < 1.0, f"the healthy client's ticks stalled: gaps {gaps}"

        # Thawed, the child finds its connection really closed (not just unsubscribed).
        os.kill(child.pid, signal.SIGCONT)
        frozen = False
        deadline = time.monotonic() + 10
        line = ""
        while not line.startswith("closed"):
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        assert child.wait(timeout=10) == 0
    finally:
        if frozen:
            os.kill(child.pid, signal.SIGCONT)
        if child.poll() is None:
            child.kill()
            child.wait()


# 2. Slow consumers --------------------------------------------------------------------------------

LISTENERS = 100
MESSAGES = 6000
MESSAGES_CAP = 18000
# 100 messages of ~2 KiB per callback stay under the 256 KiB limit, which one callback's output must
# not exceed (see test_fast_listeners_survive_one_callback_broadcasting_more_than_the_outbound_limit).
CHUNK = 100
# Growth of the host's RSS the slow-consumer runs may cause. At most 256 KiB may wait per client
# (101 clients: 25.25 MiB), a callback's batch is at most ~1 MiB, and the host idles at ~35 MiB; 64 MiB
# leaves room for the allocator and NIO's buffer pools. A broadcast's payload is one buffer shared by
# all its recipients, so in the 100-listener test a host without the limit would only keep ~6 MiB for
# the stalled reader (there the bound is a sanity check; the 1008 close is the real assertion); the
# sink test pushes 256 MiB at stalled readers, so keeping their backlog would break the bound 4 times over.
RSS_GROWTH_BOUND_KIB = 64 * 1024


def test_stalled_reader_is_closed_while_100_listeners_get_every_message_in_order(host):
    rss_before = host.rss_kib()
    log_mark = host.log_mark()

    async def scenario():
        monitor = await Monitor.open(host)
        stalled = RawClient(host.port, rcvbuf=4096).upgrade("/flood", host.port)
        _, _, _, hello = stalled.read_frame()
        stalled_id = json.loads(hello)["id"]  # and never read again

        listeners = [await connect(host.url("/flood"), max_queue=None) for _ in range(LISTENERS)]
        ids = [(await receive_json(ws))["id"] for ws in listeners]
        progress = [0] * LISTENERS
        changed = asyncio.Condition()

        async def listen(index, ws):
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] != "m":
                    continue
                assert message["seq"] == progress[index] + 1, f"listener {index}: {message['seq']} after {progress[index]}"
                async with changed:
                    progress[index] += 1
                    changed.notify_all()

        tasks = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(listeners)]

        def flagged(line):  # the host's own word that it closed this client as too slow
            return "slow consumer" in line and f"connection={stalled_id} " in line

        sent = 0
        started = time.monotonic()
        # Go on until MESSAGES are out and the host has flagged the stalled reader (how much the
        # kernel's socket buffers absorb first varies by machine), within a cap.
        while sent < MESSAGES or not any(flagged(line) for line in host.lines_since(log_mark)):
            assert sent < MESSAGES_CAP, f"stalled reader not flagged after {sent} messages"
            await listeners[0].send(json.dumps({"type": "go", "from": sent + 1, "n": CHUNK, "id": sent}))
            sent += CHUNK
            async with changed:
                try:
                    await asyncio.wait_for(changed.wait_for(lambda: min(progress) >= sent), 20)
                except TimeoutError:
                    failed = [t.exception() for t in tasks if t.done()]
                    pytest.fail(f"listeners stuck at {sorted(set(progress))} of {sent}; {failed}")
        burst_seconds = time.monotonic() - started
        gone = await monitor.wait_gone("/flood", stalled_id, timeout=10)
        listeners_gone = monitor.gone("/flood", set(ids))
        # The TCP connection itself is closed: what the kernel buffered, then EOF.
        closed = await asyncio.to_thread(stalled.wait_closed, 15)
        stalled.close()
        finished = [t for t in tasks if t.done()]
        for ws in listeners:
            assert ws.state.name == "OPEN"
            await ws.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await monitor.close()
        return sent, progress, gone, listeners_gone, closed, finished, burst_seconds

    sent, progress, gone, listeners_gone, closed, finished, burst_seconds = run(scenario())
    rss_after = host.rss_kib()
    print(f"sent {sent} messages in {burst_seconds:.1f} s; RSS {rss_before} -> {rss_after} KiB")
    assert finished == [], "a listener stopped early"
    assert progress == [sent] * LISTENERS
    # on_close gets the connection's close code: the host's own 1008 here.
    assert gone.get("code") in (1008, None), gone
    assert listeners_gone == [], "a listener that kept up was closed"
    assert closed, "the stalled client's TCP connection was not closed"
    assert rss_after - rss_before < RSS_GROWTH_BOUND_KIB, f"RSS grew from {rss_before} to {rss_after} KiB"


def test_stalled_readers_do_not_make_the_host_buffer_without_bound(host):
    # 256 MiB is pushed at three clients that never read; kept, it would be in the host's RSS.
    blocks, per_call = 4096, 16
    rss_before = host.rss_kib()
    peak = rss_before

    async def scenario():
        nonlocal peak
        monitor = await Monitor.open(host)
        stalled = [RawClient(host.port, rcvbuf=4096).upgrade("/sink", host.port) for _ in range(3)]
        ids = [json.loads(client.read_frame()[3])["id"] for client in stalled]
        async with connect(host.url("/pump")) as pump:
            for call in range(blocks // per_call):
                assert await request(pump, {"type": "pump", "n": per_call, "id": call}) == {"type": "pumped", "id": call}
                peak = max(peak, host.rss_kib())
        assert peak - rss_before < RSS_GROWTH_BOUND_KIB, f"RSS grew from {rss_before} to {peak} KiB"
        gones = [await monitor.wait_gone("/sink", i, timeout=10) for i in ids]
        closed = [await asyncio.to_thread(client.wait_closed, 15) for client in stalled]
        for client in stalled:
            client.close()
        await monitor.close()
        return gones, closed

    gones, closed = run(scenario())
    print(f"RSS {rss_before} KiB, peak {peak} KiB while 256 MiB was pushed at stalled readers")
    assert all(g.get("code") in (1008, None) for g in gones), gones
    assert closed == [True, True, True]
    assert peak - rss_before < RSS_GROWTH_BOUND_KIB, f"RSS grew from {rss_before} to {peak} KiB"


def test_fast_listeners_survive_one_callback_broadcasting_more_than_the_outbound_limit(host):
    async def scenario():
        listeners = [await connect(host.url("/burst"), max_queue=None) for _ in range(5)]
        for ws in listeners:
            await receive_json(ws)
        await listeners[0].send(json.dumps({"type": "go", "n": 300}))

        async def count(ws):
            seen = 0
            while seen < 300:
                message = await receive_json(ws, timeout=10)
                seen += 1
                assert message["seq"] == seen
            return seen

        try:
            return await asyncio.gather(*(count(ws) for ws in listeners))
        finally:
            for ws in listeners:
                await ws.close()

    assert run(scenario()) == [300] * 5


# 3. Protocol violations over raw sockets ----------------------------------------------------------

VIOLATIONS = {
    "rsv1_set": (frame(TEXT, b"hi", rsv=4), 1002),
    "rsv3_set_on_ping": (frame(PING, b"", rsv=1), 1002),
    "reserved_opcode_3": (frame(0x3, b"hi"), 1002),
    "reserved_control_opcode_0xb": (frame(0xB, b""), 1002),
    "unmasked_client_frame": (frame(TEXT, b"hi", mask=False), 1002),
    "fragmented_ping": (frame(PING, b"p", fin=False), 1002),
    "ping_payload_126_bytes": (frame(PING, b"p" * 126), 1002),
    "continuation_without_start": (frame(CONT, b"x"), 1002),
    "new_text_inside_fragmented_message": (frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002),
    "invalid_utf8_text": (frame(TEXT, b"\xce\xba\xff\xfe"), 1007),
    "invalid_utf8_across_fragments": (frame(TEXT, b"\xce", fin=False) + frame(CONT, b"a"), 1007),
    "text_over_max_message_size": (frame(TEXT, b"a" * 1025), 1009),
    "fragments_over_max_message_size": (frame(TEXT, b"a" * 600, fin=False) + frame(CONT, b"a" * 600), 1009),
    "length_2_pow_62": (frame(0x2, b"", length=1 << 62), 1009),
    "close_code_999": (frame(CLOSE, close_payload(999)), 1002),
    "close_code_1005": (frame(CLOSE, close_payload(1005)), 1002),
    "close_code_2999": (frame(CLOSE, close_payload(2999)), 1002),
    "close_one_byte_payload": (frame(CLOSE, b"\x03"), 1002),
    "close_reason_invalid_utf8": (frame(CLOSE, close_payload(1000, b"\xff")), 1007),
    "close_1000": (frame(CLOSE, close_payload(1000, b"bye")), 1000),
    "close_4000": (frame(CLOSE, close_payload(4000)), 4000),
}


@pytest.mark.parametrize("name", VIOLATIONS)
def test_protocol_violation_gets_close_code(host, name):
    data, expected = VIOLATIONS[name]
    client = RawClient(host.port).upgrade("/proto", host.port)
    try:
        client.send(data)
        code, reason, skipped = client.read_close(timeout=5)
        assert (code, skipped) == (expected, []), f"close {code} {reason!r} after {skipped}"
        assert client.wait_closed(timeout=5), "the server sent its close but kept the TCP connection open"
    finally:
        client.close()
    assert host.alive()


def test_well_formed_frames_at_the_limits_are_served(host):
    # The counterpart of the violations: the same endpoint serves legal frames at each boundary.
    client = RawClient(host.port).upgrade("/proto", host.port)
    try:
        client.send(frame(PING, b"p" * 125))
        assert client.read_frame()[2:] == (PONG, b"p" * 125)
        client.send(frame(TEXT, b"a" * 1024))
        assert client.read_frame()[2:] == (TEXT, b"got 1024")
        client.send(frame(TEXT, "κόσμε".encode()[:3], fin=False) + frame(PING, b"mid") + frame(CONT, "κόσμε".encode()[3:]))
        assert client.read_frame()[2:] == (PONG, b"mid")
        assert client.read_frame()[2:] == (TEXT, b"got 10")
        client.send(frame(CLOSE, b""))
        code, _, _ = client.read_close()
        assert code is None  # an empty close is answered with an empty close
        assert client.wait_closed()
    finally:
        client.close()


# 4. Fuzz ------------------------------------------------------------------------------------------

FUZZ_SECONDS = 10.0
FUZZ_WORKERS = 6


def random_frame(rng):
    kind = rng.randrange(10)
    payload = rng.randbytes(rng.choice([0, 1, 2, 5, 125, 126, 127, 300, 1025, 70000]))
    if kind == 0:  # a valid header, garbage payload
        return frame(rng.choice([TEXT, 0x2]), payload)
    if kind == 1:  # any opcode
        return frame(rng.randrange(16), payload[:200])
    if kind == 2:  # reserved bits
        return frame(rng.choice([TEXT, 0x2, PING]), payload[:100], rsv=rng.randrange(1, 8))
    if kind == 3:  # fragmented control frame
        return frame(rng.choice([PING, PONG, CLOSE]), payload[:10], fin=False)
    if kind == 4:  # a close with any code and reason
        return frame(CLOSE, struct.pack("!H", rng.randrange(65536)) + payload[:100])
    if kind == 5:  # fragments, possibly out of order
        return b"".join(frame(rng.choice([TEXT, 0x2, CONT]), rng.randbytes(rng.randrange(50)), fin=rng.random() < 0.3)
                        for _ in range(rng.randrange(1, 6)))
    if kind == 6:  # unmasked
        return frame(rng.choice([TEXT, 0x2, PING]), payload[:100], mask=False)
    if kind == 7:  # a length that lies (more is declared than sent)
        return frame(0x2, payload[:50], length=rng.choice([51, 1000, 70000, 1 << 20, 1 << 63]))
    if kind == 8:  # legal traffic
        return frame(rng.choice([TEXT, PING]), rng.choice([b"{}", b'{"type":"x","id":1}', b"hello"]))
    return rng.randbytes(rng.randrange(1, 64))  # just bytes


def random_http(rng):
    return rng.choice([
        b"BLAH\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /echo HTTP/1.1\r\n" + b"X-" + rng.randbytes(200) + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(100),  # a TLS hello
    ])


async def fuzz_connection(rng, port, stats):
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        mode = rng.randrange(4)
        if mode == 0:
            writer.write(rng.randbytes(rng.randrange(1, 4096)))
        elif mode == 1:
            writer.write(random_http(rng))
        else:
            writer.write(handshake_request(rng.choice(["/echo", "/proto", "/sandbox"]), port))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101"), head
            stats["upgraded"] += 1
            for _ in range(rng.randrange(1, 8)):
                writer.write(random_frame(rng))
            if rng.random() < 0.3:  # a frame cut short, then the socket goes away
                writer.write(frame(TEXT, rng.randbytes(200))[: rng.randrange(1, 150)])
        await asyncio.wait_for(writer.drain(), 5)
        # Take whatever comes back for a moment (part of the abuse: sometimes we leave mid-reply).
        try:
            await asyncio.wait_for(reader.read(1 << 20), rng.uniform(0.01, 0.2))
        except TimeoutError:
            pass
    except (ConnectionError, asyncio.IncompleteReadError):
        stats["reset"] += 1  # the server may hang up first, which is fine
    finally:
        if rng.random() < 0.3:  # abort: RST instead of FIN
            sock = writer.get_extra_info("socket")
            if sock is not None and sock.fileno() >= 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (ConnectionError, TimeoutError):
            pass
    stats["connections"] += 1


def test_fuzzed_connections_never_disturb_a_good_client(host):
    print(f"fuzz seed: {FUZZ_SEED} (set HOSTILE_FUZZ_SEED to replay)")
    fds_before = host.open_fds()
    stats = {"connections": 0, "upgraded": 0, "reset": 0, "round_trips": 0}

    async def good_client(stop):
        rng = random.Random(FUZZ_SEED)
        async with connect(host.url("/echo")) as ws:
            while not stop.is_set():
                text = json.dumps({"n": stats["round_trips"], "pad": "é" * rng.randrange(2000)})
                await ws.send(text)
                assert await asyncio.wait_for(ws.recv(), 3) == text
                data = rng.randbytes(rng.randrange(1, 5000))
                await ws.send(data)
                assert await asyncio.wait_for(ws.recv(), 3) == data
                stats["round_trips"] += 1

    async def fuzzer(worker, deadline):
        rng = random.Random(FUZZ_SEED * 1000 + worker)
        while time.monotonic() < deadline:
            await fuzz_connection(rng, host.port, stats)

    async def scenario():
        stop = asyncio.Event()
        good = asyncio.create_task(good_client(stop))
        deadline = time.monotonic() + FUZZ_SECONDS
        try:
            await asyncio.gather(*(fuzzer(w, deadline) for w in range(FUZZ_WORKERS)))
        finally:
            stop.set()
        await asyncio.wait_for(good, 10)

    try:
        run(scenario())
    finally:
        print(f"fuzz seed {FUZZ_SEED}: {stats}")
    assert host.alive(), f"moongate died under fuzzing (seed {FUZZ_SEED}):\n{host.log_text()[-4000:]}"
    assert stats["connections"] > 100 and stats["upgraded"] > 20, stats
    assert stats["round_trips"] > 20, stats
    assert healthz(host) == (200, b"ok\n")
    # Every fuzzed connection is gone from the host (a close waits at most 2 s for the peer).
    assert wait_until(lambda: host.open_fds() <= fds_before + 2, timeout=10), (
        f"host fds {fds_before} before fuzzing, {host.open_fds()} after (seed {FUZZ_SEED})"
    )


# 5. The Lua sandbox, through the wire -------------------------------------------------------------


def test_runaway_handler_gets_error_reply_and_the_connection_goes_on(host):
    async def scenario():
        async with connect(host.url("/sandbox")) as ws:
            started = time.monotonic()
            spun = await request(ws, {"type": "spin", "id": 1}, timeout=30)
            spin_seconds = time.monotonic() - started
            after = await request(ws, {"type": "anything", "id": 2})
            return spun, spin_seconds, after

    spun, spin_seconds, after = run(scenario())
    assert spun["type"] == "error" and spun["id"] == 1, spun
    assert after == {"type": "ack", "received": True, "id": 2}
    print(f"runaway handler stopped after {spin_seconds:.2f} s: {spun}")


def test_runaway_handler_is_logged_with_the_script_line(host):
    mark = host.log_mark()

    async def scenario():
        async with connect(host.url("/sandbox")) as ws:
            return await request(ws, {"type": "spin", "id": 3}, timeout=30)

    assert run(scenario())["type"] == "error"
    line = host.wait_for_log(lambda l: 'while handling a "spin" message' in l, timeout=5, since=mark)
    assert re.search(r"sandbox\.lua:\d+:", line), line


def test_memory_hog_gets_error_reply_and_the_host_serves_on(host):
    async def scenario():
        async with connect(host.url("/sandbox")) as ws, connect(host.url("/echo")) as echo:
            hogged = await request(ws, {"type": "hog", "id": "h"}, timeout=30)
            after = await request(ws, {"type": "anything", "id": "next"})
            await echo.send("still here")
            echoed = await asyncio.wait_for(echo.recv(), REPLY_TIMEOUT)
            return hogged, after, echoed

    hogged, after, echoed = run(scenario())
    assert hogged["type"] == "error" and hogged["id"] == "h", hogged
    assert after == {"type": "ack", "received": True, "id": "next"}
    assert echoed == "still here"
    assert host.alive()
    assert host.rss_kib() < 1024 * 1024, "the capped state should not have taken the host to 1 GiB"


def test_scripts_cannot_reach_the_system(host):
    async def scenario():
        async with connect(host.url("/sandbox")) as ws:
            return await request(ws, {"type": "probe"})

    probe = run(scenario())
    assert probe.pop("type") == "probe"
    assert probe == {name: True for name in probe}, {name for name, ok in probe.items() if not ok}
    assert {"os_execute", "io_open", "require"} <= set(probe)


def test_budget_cannot_be_escaped_through_coroutines(escape_host):
    async def scenario():
        async with connect(escape_host.url("/escape")) as ws:
            return await request(ws, {"type": "coroutines", "id": 7}, timeout=3)

    assert run(scenario())["type"] == "error"
    assert escape_host.stop(timeout=5) == 0


@pytest.mark.xfail(
    strict=True,
    reason="host bug: string.find/match run in C, which the instruction budget never interrupts; an "
    "exponential pattern ('a?'x40 'a'x40) wedges the script's executor for hours and SIGTERM with it",
)
def test_budget_covers_pathological_patterns(escape_host):
    async def scenario():
        async with connect(escape_host.url("/escape")) as ws:
            return await request(ws, {"type": "pattern", "id": 8}, timeout=3)

    assert run(scenario())["type"] == "error"
    assert escape_host.stop(timeout=5) == 0


# 6. Malformed HTTP --------------------------------------------------------------------------------


def test_garbage_request_line_gets_400_and_the_host_serves_on(host):
    client = RawClient(host.port)
    try:
        client.send(b"BLAH\r\n\r\n")
        try:
            status, head = client.read_http_head()
        except (EOFError, ConnectionResetError):
            status, head = None, "<closed without a response>"
        assert status in (400, None), head
    finally:
        client.close()
    assert host.alive()
    assert healthz(host) == (200, b"ok\n")


def test_garbage_request_line_connection_is_closed_after_the_400(host):
    client = RawClient(host.port)
    try:
        client.send(b"BLAH\r\n\r\n")
        status, head = client.read_http_head()
        assert status == 400 and "connection: close" in head.lower()
        assert client.wait_closed(timeout=3), "still open 3 s after '400 Bad Request, Connection: close'"
    finally:
        client.close()


def test_upgrade_without_websocket_key_is_refused_with_4xx(host):
    client = RawClient(host.port)
    try:
        client.send(handshake_request("/echo", host.port, omit=("Sec-WebSocket-Key",)))
        status, head = client.read_http_head()
        # Observed: 426 Upgrade Required from the plain-HTTP handler, then the socket is closed.
        assert 400 <= status < 500, head
        assert client.wait_closed(timeout=5)
    finally:
        client.close()
    assert healthz(host) == (200, b"ok\n")


def test_oversized_request_head_is_refused(host):
    client = RawClient(host.port)
    try:
        try:
            client.send(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
            status, head = client.read_http_head()
        except (EOFError, ConnectionResetError, BrokenPipeError):
            status, head = None, "<closed>"
        assert status in (400, 431, None), head
    finally:
        client.close()
    assert healthz(host) == (200, b"ok\n")
