"""Browser origins against the built binary: a host on loopback lets in pages from other local
ports, a host on any other address does not, and every refusal is logged (once per origin per
minute) with its remedy and counted in /metrics."""

import asyncio
import json

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from hostile_support import Host
from test_metrics import scrape, value

SCRIPT = r"""
endpoint { path = "/open", initial = { type = "hi" } }
endpoint { path = "/partner", origins = { "https://partner.example" }, initial = { type = "hi" } }
"""

LOOPBACK_PAGES = ["http://localhost:5173", "http://127.0.0.1:8000", "http://[::1]:3000", "http://app.localhost:4200"]


def first_message(url, origin):
    async def scenario():
        async with websockets.connect(url, origin=origin, open_timeout=5) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    return asyncio.run(scenario())


def refused(url, origin):
    with pytest.raises(InvalidStatus) as refusal:
        first_message(url, origin)
    return refusal.value.response.status_code


@pytest.fixture
def scripts(tmp_path):
    (tmp_path / "origins.lua").write_text(SCRIPT)
    return tmp_path


def test_a_loopback_host_lets_in_pages_from_other_local_ports(scripts):
    host = Host(scripts).start()
    try:
        for origin in LOOPBACK_PAGES:
            assert first_message(host.url("/open"), origin) == {"type": "hi"}, origin
        assert refused(host.url("/open"), "https://evil.example") == 403
        assert refused(host.url("/open"), "http://127.0.0.1.evil.example") == 403
        # An endpoint's own list is taken as written.
        assert refused(host.url("/partner"), "http://localhost:5173") == 403
        assert first_message(host.url("/partner"), "https://partner.example") == {"type": "hi"}
    finally:
        assert host.stop() == 0


def test_a_host_on_other_addresses_keeps_the_strict_default(scripts):
    host = Host(scripts, "--host", "0.0.0.0").start()
    try:
        assert refused(host.url("/open"), "http://localhost:5173") == 403
        assert first_message(host.url("/open"), f"http://127.0.0.1:{host.port}") == {"type": "hi"}
    finally:
        assert host.stop() == 0


def test_every_refusal_is_logged_once_per_origin_per_minute_with_its_remedy_and_counted(scripts):
    host = Host(scripts, "--host", "0.0.0.0").start()
    try:
        mark = host.log_mark()
        for _ in range(3):
            assert refused(host.url("/open"), "https://app.example.com") == 403
        # Another origin's line, awaited, shows the log has caught up with the three above.
        assert refused(host.url("/partner"), "https://other.example") == 403
        host.wait_for_log(lambda line: "https://other.example" in line, timeout=5, since=mark)
        lines = [line for line in host.lines_since(mark) if "refused a WebSocket handshake" in line]
        first = [line for line in lines if "https://app.example.com" in line]
        assert len(first) == 1, lines
        assert "warning" in first[0].lower()
        assert "/open" in first[0]
        assert "--allowed-origin https://app.example.com" in first[0]
        other = [line for line in lines if "https://other.example" in line]
        assert len(other) == 1 and "/partner" in other[0] and "origins" in other[0] and "origins.lua" in other[0], lines

        samples = scrape(host)
        assert value(samples, "moongate_origin_refusals_total", endpoint="/open") == 3
        assert value(samples, "moongate_origin_refusals_total", endpoint="/partner") == 1
    finally:
        assert host.stop() == 0


def test_a_refusal_at_the_default_log_level_is_not_silent(scripts):
    """The default log level (info) shows the warning: the seeds' dashboard saw only 1006 closes."""
    host = Host(scripts, "--host", "0.0.0.0").start()
    try:
        mark = host.log_mark()
        assert refused(host.url("/open"), "http://localhost:5173") == 403
        line = host.wait_for_log(lambda l: "refused a WebSocket handshake" in l, timeout=5, since=mark)
        assert "http://localhost:5173" in line and "--allowed-origin" in line
    finally:
        assert host.stop() == 0
