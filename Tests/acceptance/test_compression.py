"""permessage-deflate (RFC 7692, #16) over real sockets: Python `websockets` (which offers
compression by default) next to one that does not, a raw client that reads the frames themselves
(RSV1, the compressed bytes, inflated here with Python's zlib), a deflate bomb, invalid
compressed data, and compression turned off per endpoint and host-wide.

Run: python3 -m pytest -q Tests/acceptance/test_compression.py   (MOONGATE_BIN overrides the binary)
"""

import asyncio
import json
import zlib

import pytest
from websockets.asyncio.client import connect

from hostile_support import CLOSE, TEXT, RawClient, frame, handshake_request
from moongate_process import MoongateProcess
from test_browser import browser  # noqa: F401 (a fixture)

SCRIPT = r"""
endpoint {
  path = "/feed",
  max_message_size = 65536,
  on = {
    snapshot = function(conn, msg)
      local items = {}
      for i = 1, msg.count do items[i] = { id = i, name = "item " .. i, state = "queued", tags = { "a", "b" } } end
      broadcast({ type = "snapshot", n = msg.n, items = items })
      return false
    end,
  },
  on_text = function(conn, text) return text end,
}

endpoint { path = "/plain", compression = false, on_text = function(conn, text) return text end }

endpoint { path = "/jobs/:job", session = { param = "job", history = 100, resume_wait = 0.2 } }
"""

OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
AGREED = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


@pytest.fixture
def host(tmp_path):
    (tmp_path / "feed.lua").write_text(SCRIPT)
    process = MoongateProcess(tmp_path).start()
    yield process
    process.stop()


def raw_client(host, path, offer=OFFER):
    """A raw client that offered permessage-deflate; returns it and the 101's extension header."""
    client = RawClient(host.port)
    client.send(handshake_request(path, host.port, extra=[offer] if offer else []))
    status, head = client.read_http_head()
    assert status == 101, head
    extensions = [line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("sec-websocket-extensions:")]
    return client, extensions


def inflate(payload):
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


def deflate(message):
    compressor = zlib.compressobj(wbits=-15)
    return (compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_a_broadcast_reaches_compressed_and_plain_clients_alike(host):
    """A websockets client that negotiated compression, one that did not, and a raw client get the
    same broadcasts; the raw client's frames really are compressed (RSV1, and far smaller)."""
    async def scenario():
        async with connect(host.url("/feed")) as compressed, connect(host.url("/feed"), compression=None) as plain:
            assert [type(e).__name__ for e in compressed.protocol.extensions] == ["PerMessageDeflate"]
            assert plain.protocol.extensions == []
            raw, extensions = raw_client(host, "/feed")
            try:
                assert extensions == [AGREED]
                await plain.send(json.dumps({"type": "snapshot", "n": 1, "count": 40}))
                got_compressed = json.loads(await asyncio.wait_for(compressed.recv(), 10))
                got_plain = json.loads(await asyncio.wait_for(plain.recv(), 10))
                fin, rsv, opcode, payload = raw.read_frame()
            finally:
                raw.close()
            return got_compressed, got_plain, (fin, rsv, opcode, payload)

    got_compressed, got_plain, (fin, rsv, opcode, payload) = asyncio.run(scenario())
    assert got_compressed == got_plain and got_plain["n"] == 1 and len(got_plain["items"]) == 40
    assert (fin, rsv, opcode) == (True, 4, TEXT)
    text = inflate(payload)
    assert json.loads(text) == got_plain
    assert len(payload) < len(text) / 4


def test_a_compressed_message_from_the_client_is_inflated_and_answered(host):
    """The raw client sends a compressed text message (RSV1, fragmented in two); the echo comes
    back compressed, and the same bytes inflate to what was sent."""
    raw, _ = raw_client(host, "/feed")
    try:
        message = ("moongate " * 300).encode()
        compressed = deflate(message)
        half = len(compressed) // 2
        raw.send(frame(TEXT, compressed[:half], fin=False, rsv=4) + frame(0x0, compressed[half:]))
        fin, rsv, opcode, payload = raw.read_frame()
    finally:
        raw.close()
    assert (fin, rsv, opcode) == (True, 4, TEXT)
    assert inflate(payload) == message


def test_a_deflate_bomb_is_closed_with_1009_and_bad_data_with_1007(host):
    """Ten megabytes of spaces deflate to a few kilobytes; over the endpoint's 64 KiB limit, the
    host closes with 1009 without inflating it all. Bytes that are not DEFLATE get 1007."""
    bomb = deflate(b" " * (10 << 20))
    assert len(bomb) < 20000
    raw, _ = raw_client(host, "/feed")
    try:
        raw.send(frame(TEXT, bomb, rsv=4))
        code, _, skipped = raw.read_close()
    finally:
        raw.close()
    assert code == 1009 and skipped == []

    raw, _ = raw_client(host, "/feed")
    try:
        raw.send(frame(TEXT, b"\xff\xff\xff\xff not deflate", rsv=4))
        code, _, _ = raw.read_close()
    finally:
        raw.close()
    assert code == 1007

    # The host is unharmed: a new client is served.
    async def still_served():
        async with connect(host.url("/feed")) as ws:
            await ws.send("ping?")
            return await asyncio.wait_for(ws.recv(), 10)

    assert asyncio.run(still_served()) == "ping?"


def test_rsv1_without_negotiation_is_a_protocol_error(host):
    """On an endpoint with compression = false the offer is declined, and a frame with RSV1 set
    is a protocol violation (1002)."""
    raw, extensions = raw_client(host, "/plain")
    try:
        assert extensions == []
        raw.send(frame(TEXT, deflate(b"hello"), rsv=4))
        code, _, _ = raw.read_close()
    finally:
        raw.close()
    assert code == 1002


def test_compression_can_be_turned_off_for_the_whole_host(tmp_path):
    """--compression off: no endpoint accepts the offer; messages flow uncompressed."""
    (tmp_path / "feed.lua").write_text(SCRIPT)
    process = MoongateProcess(tmp_path, "--compression", "off").start()
    try:
        raw, extensions = raw_client(process, "/feed")
        try:
            assert extensions == []
            raw.send(frame(TEXT, "x" * 500))
            fin, rsv, opcode, payload = raw.read_frame()
        finally:
            raw.close()
    finally:
        process.stop()
    assert (fin, rsv, opcode, payload) == (True, 0, TEXT, b"x" * 500)


def test_a_client_asking_for_a_small_window_gets_frames_that_fit_it(host):
    """server_max_window_bits=9: the 101 repeats it, and what the host sends inflates with a
    512-byte window."""
    raw, extensions = raw_client(host, "/feed", offer="Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9")
    try:
        assert extensions == [AGREED + "; server_max_window_bits=9"]
        message = ("abcdefgh" * 64 + "0123456789" * 100).encode()
        raw.send(frame(TEXT, message))
        fin, rsv, opcode, payload = raw.read_frame()
    finally:
        raw.close()
    assert rsv == 4
    assert zlib.decompressobj(-9).decompress(payload + b"\x00\x00\xff\xff") == message


def test_session_events_and_their_replay_arrive_compressed(host):
    """Events POSTed into a session reach two compressed clients replaying from seq 0 as
    compressed frames (RSV1), the same bytes for both, each inflating to the event."""
    import urllib.request

    events = [{"type": "step", "n": n, "log": "building the thing " * 20} for n in range(1, 6)]
    request = urllib.request.Request(host.http_url("/sessions/build-7/events"), data=json.dumps(events).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["seqs"] == [1, 2, 3, 4, 5]
    received = []
    for _ in range(2):
        raw, _ = raw_client(host, "/jobs/build-7?last_seq=0")
        try:
            frames = [raw.read_frame() for _ in range(6)]  # ready, then the five events
        finally:
            raw.close()
        assert json.loads(inflate(frames[0][3]) if frames[0][1] == 4 else frames[0][3])["type"] == "ready"
        assert all(rsv == 4 for _, rsv, _, _ in frames[1:])
        received.append([payload for _, _, _, payload in frames[1:]])
    assert received[0] == received[1]
    replayed = [json.loads(inflate(payload)) for payload in received[0]]
    assert [event["n"] for event in replayed] == [1, 2, 3, 4, 5] and [event["seq"] for event in replayed] == [1, 2, 3, 4, 5]


def test_close_frames_and_pings_are_never_compressed(host):
    """Control frames carry no RSV1 even on a compressed connection."""
    raw, _ = raw_client(host, "/feed")
    try:
        raw.send(frame(0x9, b"are you there"))
        fin, rsv, opcode, payload = raw.read_frame()
        assert (rsv, opcode, payload) == (0, 0xA, b"are you there")
        raw.send(frame(CLOSE, b"\x03\xe8"))
        fin, rsv, opcode, payload = raw.read_frame()
        assert (rsv, opcode) == (0, CLOSE)
    finally:
        raw.close()


def test_chromium_negotiates_compression_and_reads_compressed_broadcasts(browser, host):  # noqa: F811
    """Headless Chromium offers permessage-deflate as every browser does: it is agreed, and the
    compressed broadcast arrives whole."""
    browser.get(host.http_url("/healthz"))
    result = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const ws = new WebSocket(arguments[0]);
        ws.onopen = () => ws.send(JSON.stringify({ type: "snapshot", n: 7, count: 30 }));
        ws.onmessage = (event) => { done({ extensions: ws.extensions, message: JSON.parse(event.data) }); ws.close(); };
        ws.onerror = () => done({ error: "the WebSocket failed" });
        """,
        host.url("/feed"),
    )
    assert result.get("error") is None, result
    assert result["extensions"].startswith("permessage-deflate"), result["extensions"]
    assert result["message"]["n"] == 7 and len(result["message"]["items"]) == 30
