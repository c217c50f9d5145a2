"""The JSON scripts read and write, against Python's `json` over a real host (issues #25, #26):
integers stay integers, floats come back bit for bit, arrays stay arrays (empty ones too), and what
the codec refuses is an error reply, not a frame a client must reject.

Hypothesis generates documents; the host decodes each message into `msg` and encodes it again
(`/roundtrip` replies `{"echo": msg}`), and Python compares with what it sent, types included.
"""

import json
import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from moongate_process import MoongateProcess

ROUNDTRIP_LUA = r"""
endpoint {
  path = "/roundtrip",
  on = {
    echo = function(conn, msg) return { type = "echo", echo = msg.doc } end,
    types = function(conn, msg)
      local kinds = {}
      for i, value in ipairs(msg.values) do kinds[i] = math.type(value) or type(value) end
      return { type = "types", kinds = kinds }
    end,
    encode = function(conn, msg)
      local ok, text = pcall(json.encode, load("return " .. msg.lua, "value", "t", { json = json, math = math })())
      return { type = "encoded", ok = ok, text = text }
    end,
    decode = function(conn, msg)
      local ok, err = pcall(json.decode, msg.text)
      return { type = "decoded", ok = ok, err = not ok and err or nil }
    end,
  },
}
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    scripts = tmp_path_factory.mktemp("json_scripts")
    (scripts / "roundtrip.lua").write_text(ROUNDTRIP_LUA)
    process = MoongateProcess(scripts).start()
    yield process
    process.stop()


def call(client, **message):
    client.send(json.dumps(message))
    reply = json.loads(client.recv(timeout=10))
    assert reply.get("type") != "error", reply
    return reply


def same(a, b):
    """Equal, with the same types all the way down, and floats equal bit for bit."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
DOCUMENTS = st.recursive(
    st.none() | st.booleans() | INT64 | FLOATS | TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(DOCUMENTS)
def test_documents_survive_a_trip_through_a_script(host, document):
    with connect(host.url("/roundtrip"), max_size=None) as client:
        reply = call(client, type="echo", doc=document)
    # null is json.null in Lua, so it stays, in objects and arrays alike.
    assert same(reply["echo"], document), (reply["echo"], document)


def test_integers_reach_scripts_as_integers_and_leave_exactly(host):
    values = [42, 0, -1, 2**53 + 1, 2**63 - 1, -(2**63), 1686041011364000000, 1.0, 0.5, 1e300]
    with connect(host.url("/roundtrip")) as client:
        kinds = call(client, type="types", values=values)["kinds"]
        assert kinds == ["integer"] * 7 + ["float"] * 3
        raw = json.dumps({"type": "echo", "doc": {"job_id": 1686041011364000000, "big": 2**63 - 1, "pi": math.pi}})
        client.send(raw)
        text = client.recv(timeout=10)
    assert '"job_id":1686041011364000000' in text
    assert '"big":9223372036854775807' in text
    assert json.loads(text)["echo"]["pi"] == math.pi


def test_empty_arrays_stay_arrays_and_scripts_can_make_one(host):
    with connect(host.url("/roundtrip")) as client:
        assert call(client, type="echo", doc={"online": [], "rooms": {}})["echo"] == {"online": [], "rooms": {}}
        assert call(client, type="encode", lua="json.array()")["text"] == "[]"
        assert call(client, type="encode", lua="{}")["text"] == "{}"
        assert call(client, type="encode", lua="{ json.null, 1 }")["text"] == "[null,1]"


@pytest.mark.parametrize(
    "lua, error",
    [
        ("0/0", "NaN or infinity"),
        ("math.huge", "NaN or infinity"),
        ('"\\xff"', "not valid UTF-8"),
        ("(function() local t = {} t.t = t return t end)()", "nesting deeper than 1000"),
        ("{ [true] = 1 }", "key must be a string or a number"),
        ("json.encode", "cannot encode a function"),
    ],
)
def test_what_cannot_be_json_is_an_error_in_the_script(host, lua, error):
    with connect(host.url("/roundtrip")) as client:
        reply = call(client, type="encode", lua=lua)
    assert reply["ok"] is False and error in reply["text"], reply


@pytest.mark.parametrize("text", ['{"a":1,}', "[01]", "'x'", '{"a":"\\ud800"}', "[1] 2", "NaN", "[" * 1001 + "]" * 1001])
def test_what_is_not_json_fails_to_decode(host, text):
    with connect(host.url("/roundtrip")) as client:
        reply = call(client, type="decode", text=text)
    assert reply["ok"] is False and reply["err"].startswith("json.decode: "), reply
