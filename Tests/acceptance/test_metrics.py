"""GET /metrics: scrape, drive real traffic, scrape again, and compare."""

import asyncio
import json
import re
import signal
import urllib.request

import websockets

from hostile_support import Host

SCRIPT = r"""
return endpoint {
  path = "/m",
  initial = { type = "hello" },
  on = {
    shout = function(conn, msg, raw) broadcast(raw) return false end,
    fail = function() error("nope") end,
    echo = function(conn, msg) return { type = "echoed" } end,
  },
}
"""

SAMPLE = re.compile(r'^(\w+)(?:\{(.*)\})? (\S+)$')


def scrape(host):
    with urllib.request.urlopen(f"http://127.0.0.1:{host.port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            samples[(name, tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels or ""))))] = float(value)
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_real_traffic(tmp_path):
    (tmp_path / "m.lua").write_text(SCRIPT)
    host = Host(tmp_path).start()
    try:
        before = scrape(host)

        async def traffic():
            async with websockets.connect(host.url("/m")) as a, websockets.connect(host.url("/m")) as b:
                for ws in (a, b):
                    assert json.loads(await ws.recv()) == {"type": "hello"}
                for message in ({"type": "echo", "id": 1}, {"type": "unhandled", "id": 2}, {"type": "fail", "id": 3}):
                    await a.send(json.dumps(message))
                    await asyncio.wait_for(a.recv(), 5)
                await a.send("{not json")
                assert json.loads(await asyncio.wait_for(a.recv(), 5))["type"] == "error"
                await a.send(json.dumps({"type": "shout", "n": 1}))
                for ws in (a, b):
                    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "shout"
                during = scrape(host)
            return during

        during = asyncio.run(traffic())
        host.process.send_signal(signal.SIGHUP)
        host.wait_for_log(lambda line: "reloaded scripts" in line, timeout=10)
        after = scrape(host)
    finally:
        assert host.stop() == 0

    endpoint = {"endpoint": "/m"}
    assert value(during, "moongate_connections", **endpoint) == 2
    assert value(after, "moongate_connects_total", **endpoint) - value(before, "moongate_connects_total", **endpoint) == 2
    assert value(after, "moongate_messages_in_total", **endpoint) - value(before, "moongate_messages_in_total", **endpoint) == 5
    assert value(after, "moongate_acks_total", **endpoint) - value(before, "moongate_acks_total", **endpoint) == 1
    assert value(after, "moongate_error_replies_total", **endpoint) - value(before, "moongate_error_replies_total", **endpoint) == 2
    assert value(after, "moongate_broadcasts_total", **endpoint) - value(before, "moongate_broadcasts_total", **endpoint) == 1
    assert value(after, "moongate_deliveries_total", **endpoint) - value(before, "moongate_deliveries_total", **endpoint) == 2
    assert value(after, "moongate_connections", **endpoint) == 0
    assert value(after, "moongate_disconnects_total", endpoint="/m", code="1000") == 2
    assert value(after, "moongate_lua_errors_total", script=f"{tmp_path.name}/m.lua", kind="runtime") == 1
    handler_calls = value(after, "moongate_lua_call_duration_seconds_count", script=f"{tmp_path.name}/m.lua", kind="handler")
    assert handler_calls >= 3
    assert value(after, "moongate_reloads_total", result="ok") == 1
