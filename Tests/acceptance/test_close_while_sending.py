"""A client's close frame is answered at once, whatever the host still has on its way to that
client: mid-replay (session and endpoint history), mid-broadcast burst, mid large echo; and a
client that goes away abruptly in the same places costs nothing and loses nothing.

The clients here keep reading while they close (`max_queue=None`), as a browser does. Python
websockets' default `max_queue=16` stops reading the socket once 16 messages wait unread; a
`close()` then never reads the answer that is already there and ends with 1006 after
`close_timeout`, against any server (its maintainers call that the correct behaviour,
python-websockets/websockets#1555). `test_the_host_answers_even_a_client_that_stopped_reading`
shows that the host's part is done at once in that case too: it answers and closes its side.
"""

import asyncio
import json
import shutil
import time
import urllib.request

import pytest
from websockets.asyncio.client import connect

from moongate_process import REPO
from session_support import STEP_TIMEOUT, Host, RawClient, recv_json
from hostile_support import CLOSE, close_payload, frame
from test_metrics import scrape, value

# A close answered later than this was not answered "at once": the client's own timeout is 10 s.
PROMPT = 1.0
PROGRESS = "/ws/progress/:session"

EXTRA = r"""
-- A history endpoint and a burst source, next to the bundled scripts.
endpoint {
  path = "/history",
  history = { size = 5000 },
  initial = { type = "state" },
  on = {
    burst = function(conn, msg)
      for i = 1, msg.n do broadcast({ type = "tick", i = i, pad = string.rep("x", msg.size or 100) }) end
    end,
  },
}
endpoint {
  path = "/burst",
  initial = { type = "hello" },
  on = {
    burst = function(conn, msg)
      for i = 1, msg.n do broadcast({ type = "tick", i = i, pad = string.rep("x", msg.size or 100) }) end
    end,
  },
}
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    scripts = tmp_path_factory.mktemp("scripts")
    shutil.copytree(REPO / "scripts", scripts, dirs_exist_ok=True)
    (scripts / "extra.lua").write_text(EXTRA)
    server = Host(scripts).start()
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.log_text()[-4000:]


def run(coroutine):
    return asyncio.run(coroutine)


def reader(host, path, **options):
    options.setdefault("max_queue", None)
    options.setdefault("open_timeout", STEP_TIMEOUT)
    options.setdefault("close_timeout", 10)
    options.setdefault("max_size", None)
    return connect(host.url(path), **options)


async def next_event(ws):
    """The next session event, past the endpoint's application heartbeats."""
    while True:
        message = await recv_json(ws)
        if message.get("type") != "heartbeat":
            return message


async def timed_close(ws):
    started = time.monotonic()
    await ws.close()
    return time.monotonic() - started


def post(host, session, count, start=0, pad=0):
    """POSTs `count` events numbered from `start`, in bodies under the 1 MiB request limit."""
    events = [{"type": "note", "n": n, "pad": "x" * pad} for n in range(start, start + count)]
    per_request = max(1, (512 << 10) // (pad + 40))
    for first in range(0, count, per_request):
        host.emit(session, events[first : first + per_request])


def disconnects(host, endpoint, code):
    return value(scrape(host), "moongate_disconnects_total", endpoint=endpoint, code=str(code))


async def wait_for_metric(host, read, predicate, what, timeout=STEP_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        current = await asyncio.to_thread(read)
        if predicate(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {current} after {timeout} s")
        await asyncio.sleep(0.02)  # polling an HTTP counter: there is no event to await


# Clean closes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pending, size", [(100, 10), (1000, 10), (1000, 900)])
def test_a_close_mid_replay_is_answered_at_once(host, pending, size):
    """Up to the bundled endpoint's bounds (1,000 events, 1 MiB): a replay of up to 0.9 MB."""
    session = f"replay-{pending}-{size}"
    post(host, session, pending, pad=size)

    async def scenario():
        async with reader(host, f"/ws/progress/{session}?last_seq=0") as ws:
            assert (await recv_json(ws))["type"] == "ready"
            for n in range(10):
                assert (await next_event(ws))["n"] == n
            took = await timed_close(ws)
            return took, ws.close_code

    took, code = run(scenario())
    assert code == 1000, f"the host's close frame never arrived (close took {took:.2f} s)"
    assert took < PROMPT, f"close answered after {took:.2f} s"


def test_a_close_mid_history_replay_is_answered_at_once(host):
    async def scenario():
        # Fill the endpoint's history: 3,000 broadcasts, kept with seqs.
        async with reader(host, "/history") as filler:
            await recv_json(filler)  # ready
            await recv_json(filler)  # the state
            await filler.send(json.dumps({"type": "burst", "n": 3000}))
            while (await recv_json(filler)).get("i") != 3000:
                pass
        async with reader(host, "/history?last_seq=0") as ws:
            kinds = [(await recv_json(ws))["type"] for _ in range(12)]
            assert kinds[0] == "ready" and kinds[-1] == "tick", kinds
            took = await timed_close(ws)
            return took, ws.close_code

    took, code = run(scenario())
    assert (code, took < PROMPT) == (1000, True), f"code {code}, close took {took:.2f} s"


def test_a_close_mid_broadcast_burst_is_answered_at_once(host):
    async def scenario():
        async with reader(host, "/burst") as sender, reader(host, "/burst") as listener:
            await recv_json(sender)
            await recv_json(listener)
            await sender.send(json.dumps({"type": "burst", "n": 5000, "size": 200}))
            for i in range(1, 11):
                assert (await recv_json(listener))["i"] == i
            took = await timed_close(listener)
            # The sender, still reading its own burst, is unaffected.
            while (await recv_json(sender)).get("i") != 5000:
                pass
            return took, listener.close_code

    took, code = run(scenario())
    assert (code, took < PROMPT) == (1000, True), f"code {code}, close took {took:.2f} s"


def test_a_close_mid_large_echo_is_answered_at_once(host):
    big = bytes(range(256)) * (8 * 4096)  # 8 MiB

    async def scenario():
        async with reader(host, "/echo") as ws:
            await ws.send(big)
            took = await timed_close(ws)
            return took, ws.close_code

    took, code = run(scenario())
    assert (code, took < PROMPT * 3) == (1000, True), f"code {code}, close took {took:.2f} s"


def test_no_data_follows_the_hosts_close_frame_mid_replay(host):
    """On the wire: after the client's close, whatever was already on its way, then the host's
    close frame (1000), then the end of the TCP stream, with no frame after the close."""
    session = "raw-replay"
    post(host, session, 2000)
    client = RawClient(host.port, f"/ws/progress/{session}?last_seq=0")
    try:
        for _ in range(11):  # ready and ten events
            client.read_frame()
        client.send(frame(CLOSE, close_payload(1000)))
        started = time.monotonic()
        frames = client.frames_until_eof(timeout=5)
        took = time.monotonic() - started
    finally:
        client.sock.close()
    closes = [index for index, (opcode, _) in enumerate(frames) if opcode == CLOSE]
    assert closes == [len(frames) - 1], f"close frames at {closes} of {len(frames)} frames"
    assert frames[-1][1][:2] == (1000).to_bytes(2, "big")
    assert took < PROMPT, f"the host's close and FIN took {took:.2f} s"


def test_the_host_answers_even_a_client_that_stopped_reading(host):
    """The issue's reproduction, default websockets client: 100 events pending, read 10, close.
    The client is deaf by then (see the module docstring), but the host has answered and closed
    its side within moments: the disconnect is counted with the client's code, 1000."""
    session = "deaf-client"
    post(host, session, 100)
    before = disconnects(host, PROGRESS, 1000)

    async def scenario():
        ws = await connect(host.url(f"/ws/progress/{session}?last_seq=0"), open_timeout=STEP_TIMEOUT)
        for _ in range(11):
            await recv_json(ws)
        closing = asyncio.create_task(ws.close())
        try:
            await wait_for_metric(
                host, lambda: disconnects(host, PROGRESS, 1000), lambda n: n >= before + 1, "the host's answer", timeout=PROMPT * 2
            )
        finally:
            ws.transport.abort()
            await asyncio.gather(closing, return_exceptions=True)

    run(scenario())


# Abrupt ends ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["replay", "burst", "large echo"])
def test_a_client_that_vanishes_mid_send_costs_nothing(host, where):
    connections_before = value(scrape(host), "moongate_connections", endpoint="/echo")

    async def scenario():
        if where == "replay":
            session = "vanish-replay"
            post(host, session, 3000)
            ws = await reader(host, f"/ws/progress/{session}?last_seq=0")
            for _ in range(11):
                await recv_json(ws)
        elif where == "burst":
            sender = await reader(host, "/burst")
            await recv_json(sender)
            ws = await reader(host, "/burst")
            await recv_json(ws)
            await sender.send(json.dumps({"type": "burst", "n": 5000}))
            await recv_json(ws)
        else:
            ws = await reader(host, "/echo")
            await ws.send(bytes(8 << 20))
        ws.transport.abort()
        await asyncio.wait_for(ws.wait_closed(), STEP_TIMEOUT)
        if where == "burst":
            while (await recv_json(sender)).get("i") != 5000:
                pass
            await sender.close()

        # The host goes on: a new client of the same endpoint is served at once.
        async with reader(host, "/echo") as echo:
            await echo.send("still here")
            assert await asyncio.wait_for(echo.recv(), STEP_TIMEOUT) == "still here"

    run(scenario())
    with urllib.request.urlopen(host.http_url("/healthz"), timeout=STEP_TIMEOUT) as response:
        assert response.status == 200
    asyncio.run(
        wait_for_metric(
            host,
            lambda: value(scrape(host), "moongate_connections", endpoint="/echo"),
            lambda n: n == connections_before,
            "echo connections back to where they were",
        )
    )


# The flaky-network consumer ------------------------------------------------------------------------


def test_a_stream_of_2000_events_through_50_reconnects_loses_nothing_and_sees_no_reset(host):
    """The bundled progress endpoint (history bound 1,000): a consumer reconnects 50 times while
    2,000 events are posted, alternating a clean close (answered at once) and a killed socket,
    and resumes each time with last_seq and epoch."""
    session = "flaky-tab"
    total, reconnects = 2000, 50
    per_batch = total // reconnects

    async def scenario():
        received = []
        epoch = None
        slow_closes = []
        for cycle in range(reconnects):
            # Events keep arriving while the consumer is away and while it reads.
            await asyncio.to_thread(post, host, session, per_batch // 2, cycle * per_batch)
            query = f"?last_seq={len(received)}" + (f"&epoch={epoch}" if epoch else "")
            ws = await reader(host, f"/ws/progress/{session}{query}")
            ready = await next_event(ws)
            assert ready["type"] == "ready", ready
            epoch = epoch or ready["epoch"]
            assert ready["epoch"] == epoch
            await asyncio.to_thread(post, host, session, per_batch - per_batch // 2, cycle * per_batch + per_batch // 2)
            # Read part of what is there (the rest is still on its way when the tab drops).
            for _ in range(per_batch // 2 + cycle % 7):
                message = await next_event(ws)
                assert message["type"] != "reset", f"reset after seq {len(received)}: {message}"
                assert message["seq"] == len(received) + 1, f"got {message['seq']} after {len(received)}"
                received.append(message)
            if cycle % 2 == 0:
                took = await timed_close(ws)
                assert ws.close_code == 1000, f"cycle {cycle}: no close frame from the host"
                if took >= PROMPT:
                    slow_closes.append((cycle, took))
            else:
                ws.transport.abort()
                await asyncio.wait_for(ws.wait_closed(), STEP_TIMEOUT)
        # The last connection reads the rest.
        async with reader(host, f"/ws/progress/{session}?last_seq={len(received)}&epoch={epoch}") as ws:
            assert (await next_event(ws))["type"] == "ready"
            while len(received) < total:
                message = await next_event(ws)
                assert message["type"] != "reset", message
                assert message["seq"] == len(received) + 1
                received.append(message)
        return received, slow_closes

    received, slow_closes = run(scenario())
    assert slow_closes == [], f"clean closes answered late: {slow_closes}"
    assert [m["n"] for m in received] == list(range(total))
    assert [m["seq"] for m in received] == list(range(1, total + 1))
