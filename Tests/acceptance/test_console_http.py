"""The console's HTTP side and its access rules, and replies matched to requests by id: what a
browser relies on, checked with plain HTTP and WebSocket clients."""

import json
import socket
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from moongate_process import MoongateProcess


def non_loopback_address():
    """An address of this machine that is not loopback, if it has one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


@pytest.fixture
def scripts(tmp_path):
    (tmp_path / "orders.lua").write_text(
        "return endpoint {\n"
        "  path = '/orders',\n"
        "  on = {\n"
        "    place = function(conn, msg) return { type = 'placed', total = msg.qty * 3 } end,\n"
        "    own = function(conn, msg) return { type = 'mine', id = 'kept' } end,\n"
        "  },\n"
        "}\n"
    )
    return tmp_path


def get(url, origin=None):
    request = urllib.request.Request(url, headers={"Origin": origin} if origin else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def test_table_replies_carry_the_id_of_the_message_they_answer(scripts):
    host = MoongateProcess(scripts).start()
    try:
        with connect(host.url("/orders")) as ws:
            ws.send('{"type":"place","qty":2,"id":12345678901234567890}')
            # The id comes back exactly as sent, even past what a Lua number holds.
            assert json.loads(ws.recv(timeout=10)) == {"id": 12345678901234567890, "total": 6, "type": "placed"}
    finally:
        host.stop()


def test_a_reply_that_sets_its_own_id_keeps_it_and_messages_without_id_get_none(scripts):
    host = MoongateProcess(scripts).start()
    try:
        with connect(host.url("/orders")) as ws:
            ws.send('{"type":"own","id":5}')
            assert json.loads(ws.recv(timeout=10)) == {"type": "mine", "id": "kept"}
            ws.send('{"type":"place","qty":1}')
            assert json.loads(ws.recv(timeout=10)) == {"type": "placed", "total": 3}
    finally:
        host.stop()


def test_moongate_js_and_the_console_page_are_served_with_safe_headers(scripts):
    host = MoongateProcess(scripts).start()
    try:
        status, headers, body = get(host.http_url("/moongate.js"))
        assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        assert "class Moongate" in body
        status, headers, body = get(host.http_url("/console"))
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert '<script src="/moongate.js">' in body and "cdn" not in body.lower()
        assert get(host.http_url("/"))[0] == 200  # no endpoint claims /
        status, _, body = get(host.http_url("/console/live"))
        assert status == 426
        # A WebSocket client asking for / or /console finds no endpoint there.
        for path in ("/", "/console"):
            with pytest.raises(InvalidStatus) as refused:
                connect(host.url(path), open_timeout=10)
            assert refused.value.response.status_code == 404
    finally:
        host.stop()


def test_the_live_feed_refuses_pages_from_other_origins(scripts):
    host = MoongateProcess(scripts).start()
    try:
        with connect(host.url("/console/live"), origin=f"http://127.0.0.1:{host.port}") as ws:
            snapshot = json.loads(ws.recv(timeout=10))
            assert snapshot["type"] == "console"
            assert [e["path"] for e in snapshot["endpoints"]] == ["/orders"]
        with pytest.raises(InvalidStatus) as refused:
            connect(host.url("/console/live"), origin="http://evil.example", open_timeout=10)
        assert refused.value.response.status_code == 403
    finally:
        host.stop()


def test_the_console_is_shown_to_loopback_clients_only(scripts):
    address = non_loopback_address()
    if address is None:
        pytest.fail("this test needs a non-loopback IPv4 address on the machine")
    host = MoongateProcess(scripts, "--host", "0.0.0.0").start()
    try:
        status, _, body = get(f"http://{address}:{host.port}/console")
        assert status == 403 and "--admin-port" in body
        assert get(f"http://{address}:{host.port}/moongate.js")[0] == 200
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://{address}:{host.port}/console/live", open_timeout=10)
        assert refused.value.response.status_code == 403
        assert get(host.http_url("/console"))[0] == 200
    finally:
        host.stop()


def test_no_console_turns_it_off(scripts):
    host = MoongateProcess(scripts, "--no-console").start()
    try:
        assert get(host.http_url("/console"))[0] == 404
        assert get(host.http_url("/moongate.js"))[0] == 200
    finally:
        host.stop()
