"""Scripts that query databases: `sql.query`/`sql.exec` on a real SQLite file made here with
Python's sqlite3 (`--sqlite NAME=PATH[:rw]`) and on the throwaway PostgreSQL server
(`--postgres NAME=URL`), over real WebSocket clients of a real `moongate serve`.

Run: python3 -m pytest -q Tests/acceptance/test_script_sql.py   (MOONGATE_BIN overrides the binary)
"""

import asyncio
import json
import sqlite3
from datetime import datetime

import pytest
from websockets.asyncio.client import connect

from moongate_process import MoongateProcess
from postgres_server import fresh_schema

SCRIPT = """
local function parameters(msg)
  local list = msg.params or {}
  if msg.integers then
    for i, value in ipairs(list) do list[i] = math.tointeger(value) or value end
  end
  return table.unpack(list)
end

endpoint {
  path = "/db",
  on = {
    query = function(conn, msg)
      local rows, reason = sql.query(msg.db, msg.sql, parameters(msg))
      if rows == nil then return { type = "failed", reason = reason } end
      -- What Lua itself holds, which JSON cannot show (integer or float; json.null is userdata).
      local types = {}
      for i, row in ipairs(rows) do
        types[i] = {}
        for column, value in pairs(row) do types[i][column] = math.type(value) or type(value) end
      end
      return { type = "rows", count = #rows, rows = rows, types = types }
    end,
    exec = function(conn, msg)
      local changed, reason = sql.exec(msg.db, msg.sql, parameters(msg))
      if changed == nil then return { type = "failed", reason = reason } end
      return { type = "changed", changed = changed, kind = math.type(changed) }
    end,
    table_parameter = function(conn, msg)
      local rows = sql.query(msg.db, "SELECT ?", { 1, 2 })
      return { type = "rows", count = #rows }
    end,
    quick = function(conn, msg) return { type = "quick" } end,
  },
}
"""

ITEMS = [(1, "apple", 1.5, None), (2, "pear", 2.25, "ripe"), (3, "plum", None, "x' OR 1=1")]


@pytest.fixture
def files(tmp_path):
    """The scripts folder and a read-only SQLite file made with Python's sqlite3."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "db.lua").write_text(SCRIPT)
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL, note TEXT)")
        db.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", ITEMS)
    db.close()
    return scripts, path


@pytest.fixture
def shop(files):
    """A host reading the SQLite file as `shop` (read-only), and the file's path."""
    scripts, path = files
    host = MoongateProcess(scripts, "--sqlite", f"shop={path}").start()
    yield host, path
    host.stop()


def query(db, sql, *params, **extra):
    return {"type": "query", "db": db, "sql": sql, "params": list(params), **extra}


def execute(db, sql, *params, **extra):
    return {"type": "exec", "db": db, "sql": sql, "params": list(params), **extra}


async def ask(ws, message):
    await ws.send(json.dumps(message))
    return json.loads(await asyncio.wait_for(ws.recv(), 20))


def talk(host, *messages):
    """Sends each message on one connection and returns the replies, in order."""

    async def scenario():
        async with connect(host.url("/db")) as ws:
            return [await ask(ws, message) for message in messages]

    return asyncio.run(scenario())


def sqlite_rows(path, sql, *params):
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute(sql, params)]
    finally:
        db.close()


def test_a_read_only_sqlite_file_answers_rows_nulls_and_bound_parameters(shop):
    """Rows come back keyed by column with NULL as JSON null, and parameters are bound, never spliced."""
    host, path = shop
    every, one, injected, literal = talk(
        host,
        query("shop", "SELECT * FROM items ORDER BY id"),
        query("shop", "SELECT * FROM items WHERE id = ?", 2, id=7),
        query("shop", "SELECT * FROM items WHERE name = ?", "x' OR 1=1 --"),
        query("shop", "SELECT * FROM items WHERE note = ?", "x' OR 1=1"),
    )
    assert every["rows"] == sqlite_rows(path, "SELECT * FROM items ORDER BY id")
    assert any(value is None for row in every["rows"] for value in row.values())
    assert [kinds["price"] for kinds in every["types"]] == ["float", "float", "userdata"]
    assert every["types"][0] == {"id": "integer", "name": "string", "price": "float", "note": "userdata"}
    assert one["id"] == 7 and one["rows"] == sqlite_rows(path, "SELECT * FROM items WHERE id = 2")
    assert injected["count"] == 0
    # The same quote-laden text, bound as a value, matches only the row that holds it.
    assert literal["count"] == 1
    assert literal["rows"] == sqlite_rows(path, "SELECT * FROM items WHERE note = ?", "x' OR 1=1")


def test_writes_to_a_read_only_sqlite_file_are_refused(shop):
    """sql.exec on a read-only file says read-only and :rw; a DELETE through sql.query fails too."""
    host, path = shop
    before = sqlite_rows(path, "SELECT * FROM items ORDER BY id")
    refused, sneaked = talk(host, execute("shop", "DELETE FROM items"), query("shop", "DELETE FROM items"))
    assert refused["type"] == "failed"
    assert "read-only" in refused["reason"] and ":rw" in refused["reason"]
    assert sneaked["type"] == "failed" and "read" in sneaked["reason"]
    assert sqlite_rows(path, "SELECT * FROM items ORDER BY id") == before


def test_a_rw_sqlite_database_is_created_and_its_writes_are_on_disk(tmp_path, files):
    """`:rw` creates the file; inserts return 1, an update its count, and sqlite3 reads the rows."""
    scripts, _ = files
    path = tmp_path / "new" / "made.db"
    path.parent.mkdir()
    host = MoongateProcess(scripts, "--sqlite", f"made={path}:rw").start()
    try:
        assert path.exists()
        created, *inserted, updated = talk(
            host,
            execute("made", "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, n INTEGER)"),
            *(execute("made", "INSERT INTO notes(body, n) VALUES (?, ?)", body, n)
              for body, n in (("one", 1), ("two", 2), ("three", 3))),
            execute("made", "UPDATE notes SET body = body || ? WHERE n >= ?", "!", 2),
        )
    finally:
        host.stop()
    assert created == {"type": "changed", "changed": 0, "kind": "integer"}
    assert [reply["changed"] for reply in inserted] == [1, 1, 1]
    assert updated["changed"] == len(sqlite_rows(path, "SELECT 1 FROM notes WHERE n >= 2"))
    assert sqlite_rows(path, "SELECT body, n FROM notes ORDER BY n") == [
        {"body": "one", "n": 1}, {"body": "two!", "n": 2}, {"body": "three!", "n": 3}]


def test_a_table_parameter_or_an_unknown_database_fails_that_message_only(shop):
    """A table parameter raises (the error reply; the log says why); a name no flag gave is nil and
    a reason naming the flags; the next message is answered."""
    host, path = shop
    table, unknown, after = talk(
        host,
        {"type": "table_parameter", "db": "shop", "id": 1},
        query("stock", "SELECT 1", id=2),
        query("shop", "SELECT name FROM items WHERE id = ?", 1, id=3),
    )
    assert table == {"type": "error", "error": "handler failed", "id": 1}
    assert unknown["type"] == "failed" and unknown["id"] == 2, unknown
    assert "no database named 'stock'" in unknown["reason"]
    assert "--sqlite stock=" in unknown["reason"] and "--postgres stock=" in unknown["reason"]
    assert after["id"] == 3 and after["rows"] == sqlite_rows(path, "SELECT name FROM items WHERE id = 1")
    host.wait_for_log(lambda l: "parameter 1 is a table" in l, timeout=5, what="the table error")


def test_a_missing_read_only_sqlite_file_stops_the_host(files, tmp_path):
    """A read-only --sqlite path that does not exist: exit status 1, a message naming --sqlite."""
    scripts, _ = files
    missing = tmp_path / "absent.db"
    host = MoongateProcess(scripts, "--sqlite", f"gone={missing}")
    with pytest.raises(AssertionError, match="exited before"):
        host.start(timeout=20)
    assert host.process.wait(timeout=10) == 1
    assert "--sqlite gone=" in host.log_text()
    assert not missing.exists()


# PostgreSQL ---------------------------------------------------------------------------------------


@pytest.fixture
def pg(postgres, files):
    """A fresh schema with an items table, and a host reaching the server as `pg`."""
    scripts, path = files
    schema = fresh_schema()
    postgres.psql(
        f"CREATE SCHEMA {schema};"
        f"CREATE TABLE {schema}.items(id int PRIMARY KEY, price float8, amount numeric(10,2), ok bool,"
        f" name text, note text, at timestamptz);"
        f"INSERT INTO {schema}.items VALUES"
        f" (5, 2.5, 10.25, true, 'five', NULL, '2024-03-01 12:34:56+00'),"
        f" (7, 0.125, 3.50, false, 'seven', 'x'' OR 1=1', '2023-12-31 23:00:00-02')"
    )
    host = MoongateProcess(scripts, "--postgres", f"pg={postgres.url}", "--sqlite", f"shop={path}").start()
    yield host, schema
    host.stop()


def psql_json(postgres, sql):
    return json.loads(postgres.psql(f"SELECT coalesce(json_agg(t), '[]') FROM ({sql}) t"))


def test_postgres_columns_come_back_as_lua_types(pg, postgres):
    """int, float8, numeric, bool, text, NULL and timestamptz arrive as their Lua kinds and values."""
    host, schema = pg
    got, interval, cast = talk(
        host,
        query("pg", f"SELECT * FROM {schema}.items ORDER BY id"),
        query("pg", "SELECT '1 day'::interval AS span"),
        query("pg", "SELECT '1 day'::interval::text AS span"),
    )
    expected = psql_json(postgres, f"SELECT * FROM {schema}.items ORDER BY id")
    assert got["types"] == [
        {"id": "integer", "price": "float", "amount": "float", "ok": "boolean", "name": "string", "note": note,
         "at": "string"} for note in ("userdata", "string")]
    assert len(got["rows"]) == len(expected)
    for row, want in zip(got["rows"], expected):
        assert datetime.fromisoformat(row.pop("at")) == datetime.fromisoformat(want.pop("at"))
        assert row == want
    assert interval["type"] == "failed" and "::text" in interval["reason"]
    assert cast["rows"] == psql_json(postgres, "SELECT '1 day'::interval::text AS span")


def test_postgres_parameters_are_bound_as_text_the_server_types(pg, postgres):
    """`$1` takes a Lua integer or a string for an int column; quotes in a value match nothing."""
    host, schema = pg
    by_id = f"SELECT id, name FROM {schema}.items WHERE id = $1"
    as_integer, as_string, as_float, flag, injected, spliced = talk(
        host,
        query("pg", by_id, 5, integers=True),
        query("pg", by_id, "5"),
        query("pg", f"SELECT id FROM {schema}.items WHERE price < $1", 0.5),
        query("pg", f"SELECT id FROM {schema}.items WHERE ok = $1", False),
        query("pg", f"SELECT id FROM {schema}.items WHERE name = $1", "x' OR 1=1 --"),
        query("pg", by_id, "5 OR 1=1"),
    )
    want = psql_json(postgres, f"SELECT id, name FROM {schema}.items WHERE id = 5")
    assert as_integer["rows"] == want and as_string["rows"] == want and len(want) == 1
    assert as_float["rows"] == psql_json(postgres, f"SELECT id FROM {schema}.items WHERE price < 0.5")
    assert flag["rows"] == psql_json(postgres, f"SELECT id FROM {schema}.items WHERE NOT ok")
    assert injected["count"] == 0
    assert spliced["type"] == "failed" and "5 OR 1=1" in spliced["reason"]


def test_postgres_exec_counts_rows_and_psql_sees_the_write(pg, postgres):
    """sql.exec returns the rows changed, and psql reads what it wrote."""
    host, schema = pg
    cheap = int(postgres.psql(f"SELECT count(*) FROM {schema}.items WHERE price < 3"))
    inserted, updated, none = talk(
        host,
        execute("pg", f"INSERT INTO {schema}.items(id, name, price) VALUES ($1, $2, $3)", "9", "nine", 9.75),
        execute("pg", f"UPDATE {schema}.items SET note = $1 WHERE price < $2", "cheap", 3),
        execute("pg", f"DELETE FROM {schema}.items WHERE id = $1", 404),
    )
    assert inserted == {"type": "changed", "changed": 1, "kind": "integer"}
    assert updated["changed"] == cheap and cheap > 0
    assert none["changed"] == 0
    assert postgres.psql(f"SELECT name || '|' || price FROM {schema}.items WHERE id = 9") == "nine|9.75"
    assert int(postgres.psql(f"SELECT count(*) FROM {schema}.items WHERE note = 'cheap'")) == cheap


def test_a_postgres_error_is_nil_and_the_servers_message(pg):
    """A failing statement returns nil and PostgreSQL's message; the next statement still runs."""
    host, schema = pg
    ok, error = (host.metric("moongate_script_io_calls_total", kind="sql", outcome=o) for o in ("ok", "error"))
    missing, syntax, after = talk(
        host,
        query("pg", f"SELECT * FROM {schema}.missing"),
        execute("pg", "UPDATE WHERE"),
        query("pg", f"SELECT count(*) AS n FROM {schema}.items"),
    )
    assert missing["type"] == "failed" and f'relation "{schema}.missing" does not exist' in missing["reason"]
    assert syntax["type"] == "failed" and "syntax error" in syntax["reason"]
    assert after["type"] == "rows" and after["types"] == [{"n": "integer"}]
    assert host.metric("moongate_script_io_calls_total", kind="sql", outcome="ok") == ok + 1
    assert host.metric("moongate_script_io_calls_total", kind="sql", outcome="error") == error + 2


def test_a_wrong_postgres_password_stops_the_host(postgres, files):
    """--postgres with a wrong password: exit status 1 at start and a message naming --postgres."""
    scripts, _ = files
    assert ":moongate@" in postgres.url
    wrong = postgres.url.replace(":moongate@", ":not-the-password@")
    host = MoongateProcess(scripts, "--postgres", f"pg={wrong}")
    with pytest.raises(AssertionError, match="exited before"):
        host.start(timeout=30)
    assert host.process.wait(timeout=10) == 1
    assert "--postgres pg" in host.log_text() and "password" in host.log_text()
    assert "not-the-password" not in host.log_text()


def test_a_slow_postgres_query_holds_no_other_client(pg, postgres):
    """While one client's pg_sleep runs, 20 other clients of the script get their replies first."""
    host, schema = pg
    token = fresh_schema()

    async def scenario():
        events = []
        others = [await connect(host.url("/db")) for _ in range(20)]
        try:
            async with connect(host.url("/db")) as slow:
                await slow.send(json.dumps(query("pg", f"SELECT pg_sleep(2)::text AS {token}", id="slow")))

                async def slow_reply():
                    reply = json.loads(await asyncio.wait_for(slow.recv(), 20))
                    events.append("slow")
                    return reply

                waiting = asyncio.create_task(slow_reply())
                # An observable start: PostgreSQL shows the statement running.
                activity = f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%AS {token}' AND state = 'active'"
                for _ in range(100):
                    running = await asyncio.to_thread(postgres.psql, activity) == "1"
                    if running or waiting.done():
                        break
                assert running and not waiting.done(), "the slow query was never seen running"
                in_flight = await asyncio.to_thread(host.metric, "moongate_script_io_in_flight", script="scripts/db.lua")
                assert in_flight == 1 and not waiting.done()

                async def other(number, ws):
                    message = query("shop", "SELECT count(*) AS n FROM items") if number % 2 else {"type": "quick"}
                    reply = await ask(ws, {**message, "id": number})
                    events.append(number)
                    return reply

                replies = await asyncio.gather(*(other(n, ws) for n, ws in enumerate(others)))
                return events, replies, await waiting
        finally:
            for ws in others:
                await ws.close()

    events, replies, slow = asyncio.run(scenario())
    assert events[-1] == "slow" and sorted(events[:-1]) == list(range(20))
    assert [reply["id"] for reply in replies] == list(range(20))
    assert all(reply["type"] == ("rows" if reply["id"] % 2 else "quick") for reply in replies)
    assert [reply["rows"] for reply in replies if reply["id"] % 2] == [[{"n": len(ITEMS)}]] * 10
    assert slow["id"] == "slow" and slow["rows"] == [{token: ""}]
