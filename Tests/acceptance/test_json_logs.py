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


def test_a_scripts_log_line_names_its_file_once(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "helper.lua").write_text('return { note = function() log.warn("from the module") end }\n')
    (tmp_path / "talk.lua").write_text(
        'local helper = require("helper")\n'
        'log.info("loaded", 42)\n'
        'helper.note()\n'
        'return endpoint { path = "/talk" }\n'
    )
    host = Host(tmp_path, "--log-format", "json").start()
    try:
        host.wait_for_log(lambda line: "from the module" in line, timeout=5)
    finally:
        assert host.stop() == 0
    records = [json.loads(line) for line in host.lines if line != "<stderr closed>"]
    loaded = next(record for record in records if record["message"].startswith("loaded"))
    assert loaded["message"] == "loaded 42"
    assert loaded["script"].endswith("talk.lua") and loaded["line"] == "2" and loaded["level"] == "info"
    module = next(record for record in records if record["message"] == "from the module")
    assert module["at"].endswith("lib/helper.lua:1") and module["level"] == "warning"
