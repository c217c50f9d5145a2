"""`--log-format json`: every log line is one JSON object with the documented fields."""

import asyncio
import json

import websockets

from hostile_support import Host


def test_every_log_line_is_a_json_object_with_context(tmp_path):
    (tmp_path / "boom.lua").write_text(
        'return endpoint { path = "/boom", on = { boom = function() error("kaput") end } }\n'
    )
    host = Host(tmp_path, "--log-format", "json", "--log-level", "debug").start()
    try:
        async def scenario():
            async with websockets.connect(host.url("/boom")) as ws:
                await ws.send(json.dumps({"type": "boom", "id": 1}))
                return json.loads(await asyncio.wait_for(ws.recv(), 5))

        assert asyncio.run(scenario())["type"] == "error"
        host.wait_for_log(lambda line: "kaput" in line, timeout=5)
    finally:
        assert host.stop() == 0
    records = [json.loads(line) for line in host.lines if line != "<stderr closed>"]
    assert records and all({"timestamp", "level", "message"} <= record.keys() for record in records)
    failure = next(record for record in records if "kaput" in record["message"])
    assert failure["level"] == "error"
    assert failure["message"].startswith("boom.lua:1: kaput") or "boom.lua:1:" in failure["message"]
    assert failure["endpoint"] == "/boom" and failure["connection"] and failure["script"].endswith("boom.lua")
    assert any(record["message"].startswith("listening on") for record in records)
