"""Opt-in history on a broadcast endpoint: a dashboard client that reconnects with last_seq gets
what it missed, or a reset plus the current snapshot."""

import asyncio
import json

import pytest
import websockets

from hostile_support import Host

SCRIPT = r"""
local n = 0
return endpoint {
  path = "/dash",
  history = { size = 5 },
  initial = function() return { type = "state", n = n } end,
  on = { bump = function() n = n + 1; broadcast({ type = "bumped", n = n }) end },
}
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    scripts = tmp_path_factory.mktemp("history")
    (scripts / "dash.lua").write_text(SCRIPT)
    server = Host(scripts).start()
    try:
        yield server
    finally:
        assert server.stop() == 0


async def take(ws, count):
    return [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(count)]


async def bump(ws, times):
    """Bumps and waits for each broadcast and its ack; returns the seqs seen."""
    seqs = []
    for _ in range(times):
        await ws.send(json.dumps({"type": "bump"}))
        for message in await take(ws, 2):
            if message["type"] == "bumped":
                seqs.append(message["seq"])
    return seqs


def test_history_endpoint_resumes_misses_resets_and_snapshots(host):
    url = host.url("/dash")

    async def scenario():
        async with websockets.connect(url) as first:
            ready, state = await take(first, 2)
            assert ready["type"] == "ready" and state["type"] == "state"
            epoch, start = ready["epoch"], ready["seq"]
            seqs = await bump(first, 8)
            assert seqs == list(range(start + 1, start + 9))

        # Everything missed is still held: the missed events, and no snapshot.
        async with websockets.connect(f"{url}?last_seq={start + 5}&epoch={epoch}") as resumed:
            messages = await take(resumed, 4)
            assert messages[0]["type"] == "ready"
            assert [m["seq"] for m in messages[1:]] == [start + 6, start + 7, start + 8]
            assert all(m["type"] == "bumped" for m in messages[1:])

        # Evicted (history holds 5): a reset, then the current snapshot, then live events.
        async with websockets.connect(f"{url}?last_seq={start + 1}&epoch={epoch}") as stale:
            ready, reset, snapshot = await take(stale, 3)
            assert (reset["type"], snapshot) == ("reset", {"type": "state", "n": start + 8})
            assert await bump(stale, 1) == [start + 9]

        # Another epoch: the same.
        async with websockets.connect(f"{url}?last_seq=1&epoch=another") as foreign:
            assert [m["type"] for m in await take(foreign, 3)] == ["ready", "reset", "state"]

        # A fresh client gets the snapshot and live events only.
        async with websockets.connect(url) as fresh:
            assert [m["type"] for m in await take(fresh, 2)] == ["ready", "state"]

    asyncio.run(scenario())
