"""Acceptance tests for sessions (README, "Sessions: streams that survive disconnects"): buffering
while nobody watches, resume by URL or first message, reset, closing and retention, the HTTP API,
the Lua functions, and a consumer that reconnects 100 times while a producer emits.

One `moongate serve` runs for the module on the scripts in SCRIPTS below (the token test starts
its own with --session-token). Every wait is bounded and waits on an event (a message, a close,
an HTTP answer); the only polling is for a session's removal by the sweeper, which nothing
announces.

Run: python3 -m pytest -q Tests/acceptance/test_sessions.py
(MOONGATE_BIN overrides the binary; SESSIONS_CHURN_SEED the churn test's random seed)
"""

import asyncio
import json
import os
import random
import string
import threading
import time

import pytest
from websockets.exceptions import InvalidStatus

from session_support import (
    CLOSE,
    STEP_TIMEOUT,
    TEXT,
    Ctl,
    Host,
    RawClient,
    masked_frame,
    read_events,
    recv_json,
    recv_until_closed,
    session_connect,
    strip_seq,
)

CHURN_SEED = int(os.environ.get("SESSIONS_CHURN_SEED", "1455"))

SCRIPTS = {
    # Every session endpoint is in this one file, so its first one's settings are the host's
    # defaults for sessions created over HTTP or by emit() outside a session endpoint (history
    # large enough for the churn test, retain = 1 s for the closing test).
    "sessions.lua": r"""
local watchers = {}   -- session id -> { [conn id] = conn }, for /ctl's kick

local function watch(conn)
  local session = conn.params.session
  conn.data.session = session
  watchers[session] = watchers[session] or {}
  watchers[session][conn.id] = conn
end

local function unwatch(conn)
  local set = watchers[conn.data.session]
  if set then set[conn.id] = nil end
end

endpoint {
  path = "/ws/progress/:session",
  session = { history = 100000, max_bytes = 67108864, retain = 1, resume_wait = 0.5 },
  on_open = watch,
  on_close = unwatch,
  on = {
    kick = function(conn) conn:close(1012, "kick"); return false end,
  },
}

-- resume_wait = 3 (like every setting, it is the session's, fixed by whoever creates it): time
-- enough for a resume message even on a loaded machine.
endpoint {
  path = "/ws/small/:session",
  session = { history = 5, resume_wait = 3 },
}

endpoint {
  path = "/ws/patient/:session",
  session = { resume_wait = 3 },
}

endpoint {
  path = "/ws/s",
  session = { param = "id", resume_wait = 0.5 },
}

-- Test control: Lua's emit / session_status / close_session, timers, and server-side kicks.
endpoint {
  path = "/ctl",
  on = {
    emit = function(conn, msg)
      local ok, result = pcall(emit, msg.session, msg.text or msg.event)
      if ok then return { type = "emitted", ok = true, seq = result, id = msg.id } end
      return { type = "emitted", ok = false, error = tostring(result), id = msg.id }
    end,
    emit_later = function(conn, msg)
      after(msg.delay, function()
        local seq = emit(msg.session, msg.event)
        publish("/ctl", { type = "timer_emitted", session = msg.session, seq = seq })
      end)
    end,
    burst = function(conn, msg)
      local first, last
      for n = 1, msg.n do
        last = emit(msg.session, { type = "burst", n = n })
        first = first or last
      end
      return { type = "burst_done", first = first, last = last, id = msg.id }
    end,
    status = function(conn, msg)
      local status = session_status(msg.session)
      return { type = "status", found = status ~= nil, status = status or json.null, id = msg.id }
    end,
    close = function(conn, msg)
      close_session(msg.session)
    end,
    kick = function(conn, msg)
      local kicked = 0
      for _, watcher in pairs(watchers[msg.session] or {}) do
        watcher:close(1012, "kicked by /ctl")
        kicked = kicked + 1
      end
      return { type = "kicked", n = kicked, id = msg.id }
    end,
  },
}
""",
}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    scripts = tmp_path_factory.mktemp("session-scripts")
    for name, text in SCRIPTS.items():
        (scripts / name).write_text(text)
    server = Host(scripts).start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log_text()


def run(coroutine):
    return asyncio.run(coroutine)


def word(rng, length=12):
    return "".join(rng.choice(string.ascii_letters) for _ in range(length))


def expect_ready(message, session, seq, state="open", epoch=None):
    assert message["type"] == "ready", message
    assert message["session"] == session and message["seq"] == seq and message["state"] == state, message
    assert isinstance(message["epoch"], str) and message["epoch"], message
    if epoch is not None:
        assert message["epoch"] == epoch, message


def expect_reset(message, session, epoch, seq, first_seq):
    assert message == {"type": "reset", "session": session, "epoch": epoch, "seq": seq, "first_seq": first_seq}


def stamped(events, first_seq):
    """What clients receive for `events` appended from `first_seq` on."""
    return [{"seq": first_seq + index, **event} for index, event in enumerate(events)]


# 1. Buffered while nobody watches -----------------------------------------------------------------


def test_events_emitted_while_nobody_watches_are_delivered_on_connect(host):
    session = "buffered"

    async def scenario():
        status, _, body = host.status(session)
        assert status == 404, body
        async with session_connect(host, "/ctl") as ws:
            ctl = Ctl(ws)
            events = [
                {"type": "from_http", "n": 1},
                {"type": "from_lua_handler", "n": 2},
                {"type": "from_lua_timer", "n": 3},
                {"type": "from_http", "n": 4},
                {"type": "from_http", "n": 5, "nested": {"seq": "not the host's"}},
            ]
            epoch, seqs = host.emit(session, events[0])
            assert seqs == [1]
            reply = await ctl.call({"type": "emit", "session": session, "event": events[1]})
            assert reply["ok"] and reply["seq"] == 2, reply
            await ctl.call({"type": "emit_later", "session": session, "delay": 0.05, "event": events[2]})
            notice = await ctl.notice(lambda n: n["type"] == "timer_emitted" and n["session"] == session)
            assert notice["seq"] == 3, notice
            assert host.emit(session, events[3:]) == (epoch, [4, 5])
            status, _, body = host.status(session)
            assert status == 200 and body["subscribers"] == 0 and body["last_seq"] == 5, body

            # No resume point: after resume_wait, every event held, after `ready`.
            async with session_connect(host, f"/ws/progress/{session}") as client:
                expect_ready(await recv_json(client), session, 5, epoch=epoch)
                assert [await recv_json(client) for _ in range(5)] == stamped(events, 1)
                # Then live events, and nothing in between.
                live = {"type": "live", "n": 6}
                reply = await ctl.call({"type": "emit", "session": session, "event": live})
                assert reply["seq"] == 6, reply
                assert await recv_json(client) == {"seq": 6, **live}

            # The same through ?last_seq=0, which starts delivery at once.
            async with session_connect(host, f"/ws/progress/{session}?last_seq=0&epoch={epoch}") as client:
                expect_ready(await recv_json(client), session, 6, epoch=epoch)
                received = [await recv_json(client) for _ in range(6)]
                assert received == stamped(events, 1) + [{"seq": 6, **live}]

    run(scenario())


# 2. Reliability under churn -----------------------------------------------------------------------

CHURN_EVENTS = 3000
CHURN_BATCH = 50
CHURN_RECONNECTS = 100
# Disconnects: two client-side ways, two server-side ways, 25 of each.
CHURN_WAYS = ("abort", "clean close", "kick", "ctl kick")


def test_consumer_reconnecting_100_times_gets_every_event_once_in_order(host):
    rng = random.Random(CHURN_SEED)
    print(f"churn seed: {CHURN_SEED} (set SESSIONS_CHURN_SEED to replay)")
    session = "churn"
    expected = [{"type": "progress", "n": n, "word": word(rng, rng.randint(1, 40))} for n in range(1, CHURN_EVENTS + 1)]
    batches = [expected[i : i + CHURN_BATCH] for i in range(0, CHURN_EVENTS, CHURN_BATCH)]
    ways = [way for way in CHURN_WAYS for _ in range(CHURN_RECONNECTS // len(CHURN_WAYS))]
    rng.shuffle(ways)
    takes = [rng.randint(0, 80) for _ in ways]

    async def scenario():
        cycles = 0
        cycle_done = asyncio.Condition()
        received = []
        epochs = set()
        replays = 0  # connections that began with events already waiting for them

        async def producer():
            # Batch b goes out once the consumer has been through b * 80 / batches cycles, so the
            # emits spread over the first 80 reconnects and race with connects, replays and closes.
            for index, batch in enumerate(batches):
                target = index * (CHURN_RECONNECTS * 0.8) / len(batches)
                async with cycle_done:
                    await asyncio.wait_for(cycle_done.wait_for(lambda: cycles >= target), 30)
                epoch, seqs = await asyncio.to_thread(host.emit, session, batch)
                epochs.add(epoch)
                assert seqs == list(range(index * CHURN_BATCH + 1, (index + 1) * CHURN_BATCH + 1))

        def take(message):
            assert message.get("type") not in ("reset", "ready"), f"unexpected {message} after seq {len(received)}"
            assert message["seq"] == len(received) + 1, f"got seq {message['seq']} after {len(received)}"
            received.append(message)

        async def drain_until_closed(ws):
            messages, code = await recv_until_closed(ws)
            for message in messages:
                take(message)
            return code

        producing = asyncio.create_task(producer())
        async with session_connect(host, "/ctl") as ctl_ws:
            ctl = Ctl(ctl_ws)
            epoch = None
            for cycle, (way, count) in enumerate(zip(ways, takes)):
                query = f"?last_seq={len(received)}" + (f"&epoch={epoch}" if epoch else "")
                ws = await session_connect(host, f"/ws/progress/{session}{query}")
                ready = await recv_json(ws, what="ready")
                assert ready["type"] == "ready" and ready["seq"] >= len(received), ready
                if epoch is None:
                    epoch = ready["epoch"]
                assert ready["epoch"] == epoch, ready
                replays += ready["seq"] > len(received)
                for _ in range(count):
                    try:
                        # Caught up with the producer: disconnect now rather than wait.
                        message = json.loads(await asyncio.wait_for(ws.recv(), 0.05))
                    except asyncio.TimeoutError:
                        break
                    take(message)
                if way == "abort":
                    ws.transport.abort()  # no close frame: the socket just goes away
                    await asyncio.wait_for(ws.wait_closed(), STEP_TIMEOUT)
                elif way == "clean close":
                    await ws.close()
                elif way == "kick":
                    await ws.send(json.dumps({"type": "kick"}))
                    assert await drain_until_closed(ws) == 1012
                else:
                    reply = await ctl.call({"type": "kick", "session": session})
                    # >= 1: the previous connection's on_close may not have run yet.
                    assert reply["n"] >= 1, f"cycle {cycle}: /ctl kicked no client"
                    assert await drain_until_closed(ws) == 1012
                async with cycle_done:
                    cycles += 1
                    cycle_done.notify_all()
            await asyncio.wait_for(producing, 30)

        # One last connection reads the rest.
        query = f"?last_seq={len(received)}&epoch={epoch}"
        async with session_connect(host, f"/ws/progress/{session}{query}") as ws:
            expect_ready(await recv_json(ws), session, CHURN_EVENTS, epoch=epoch)
            if len(received) < CHURN_EVENTS:
                for message in await read_events(ws, CHURN_EVENTS, timeout=15):
                    take(message)

        print(f"{CHURN_RECONNECTS} reconnects, {replays} of them resumed with events waiting")
        assert epochs == {epoch}
        assert [m["seq"] for m in received] == list(range(1, CHURN_EVENTS + 1))
        assert [strip_seq(m) for m in received] == expected

    run(scenario())


# 3. Replay and live emits interleave without a gap ------------------------------------------------


def test_emits_during_a_large_replay_keep_seqs_consecutive(host):
    session = "boundary"
    history = 10000
    for start in range(0, history, 2000):
        host.emit(session, [{"type": "held", "n": n} for n in range(start + 1, start + 2001)])

    async def scenario():
        stop = threading.Event()
        started = threading.Event()
        posted = []  # seqs of the HTTP emitter's events

        def http_emitter():
            for n in range(1, 3001):
                if stop.is_set():
                    return
                posted.extend(host.emit(session, [{"type": "live_http", "n": n}])[1])
                started.set()

        seen = {"last": 0}

        async def read_next(ws, deadline):
            message = await recv_json(ws, max(deadline - time.monotonic(), 0.001))
            assert message["seq"] == seen["last"] + 1, f"seq {message['seq']} after {seen['last']}"
            if message["seq"] <= history:
                assert message == {"seq": message["seq"], "type": "held", "n": message["seq"]}
            seen["last"] = message["seq"]

        # HTTP emits are already flowing when the client connects, and a Lua burst starts with it.
        emitting = asyncio.create_task(asyncio.to_thread(http_emitter))
        assert await asyncio.to_thread(started.wait, STEP_TIMEOUT), "the HTTP emitter did not start"
        async with session_connect(host, "/ctl") as ctl_ws:
            ctl = Ctl(ctl_ws)
            async with session_connect(host, f"/ws/progress/{session}?last_seq=0") as ws:
                burst = asyncio.create_task(ctl.call({"type": "burst", "session": session, "n": 2000}, timeout=15))
                ready = await recv_json(ws)
                assert ready["type"] == "ready" and ready["seq"] >= history, ready
                deadline = time.monotonic() + 20
                # Through the replay into live events, while both producers run.
                while not emitting.done() and (
                    seen["last"] < ready["seq"] + 500 or sum(seq > ready["seq"] for seq in posted) < 200
                ):
                    await read_next(ws, deadline)
                stop.set()
                await asyncio.wait_for(emitting, 15)
                done = await burst
                # The burst's 2000 seqs, with any HTTP emits that landed between them.
                assert done["last"] - done["first"] >= 1999, done
                final = host.status(session)[2]["last_seq"]
                while seen["last"] < final:
                    await read_next(ws, deadline)
        live_http = sum(seq > ready["seq"] for seq in posted)
        assert live_http > 0 and final > ready["seq"], "nothing was emitted after the client joined"
        print(
            f"ready seq {ready['seq']}, final {final}; {live_http} HTTP emits after ready, "
            f"{done['last'] - done['first'] - 1999} of them between the Lua burst's emits"
        )

    run(scenario())


# 4. Resume with a first message --------------------------------------------------------------------


def test_resume_message_works_like_the_query(host):
    session = "resume-message"
    events = [{"type": "step", "n": n} for n in range(1, 11)]
    url = f"/ws/patient/{session}"

    async def resuming(last_seq, epoch):
        ws = await session_connect(host, url)
        await ws.send(json.dumps({"type": "resume", "last_seq": last_seq, "epoch": epoch}))
        return ws

    async def scenario():
        # Created by a client of /ws/patient, so the session has its resume_wait (3 s).
        async with session_connect(host, f"{url}?last_seq=0") as creator:
            expect_ready(await recv_json(creator), session, 0)
            epoch, _ = host.emit(session, events)
        async with session_connect(host, f"{url}?last_seq=6&epoch={epoch}") as by_query, await resuming(
            6, epoch
        ) as by_message, await resuming(6, "0123456789abcdef") as foreign, await resuming(0, epoch) as from_zero:
            held = stamped(events, 1)
            query_seen = await read_events(by_query, 10)
            expect_ready(query_seen[0], session, 10, epoch=epoch)
            assert query_seen[1:] == held[6:]
            assert await read_events(by_message, 10) == query_seen

            foreign_seen = await read_events(foreign, 10)
            expect_ready(foreign_seen[0], session, 10, epoch=epoch)
            expect_reset(foreign_seen[1], session, epoch, 10, 1)
            assert foreign_seen[2:] == held

            zero_seen = await read_events(from_zero, 10)
            expect_ready(zero_seen[0], session, 10, epoch=epoch)
            assert zero_seen[1:] == held

            # Then live events; the resume message itself got no reply (no ack) in between.
            live = {"type": "step", "n": 11}
            assert host.emit(session, live) == (epoch, [11])
            for ws in (by_query, by_message, foreign, from_zero):
                assert await recv_json(ws) == {"seq": 11, **live}

    run(scenario())


# 5. Reset ------------------------------------------------------------------------------------------


async def small_session(host, session, count):
    """A /ws/small session (history 5) holding events 1..count; returns (epoch, watcher, events).
    The watcher stays connected: it created the session with the endpoint's settings."""
    watcher = await session_connect(host, f"/ws/small/{session}?last_seq=0")
    ready = await recv_json(watcher)
    expect_ready(ready, session, 0)
    events = [{"type": "step", "n": n} for n in range(1, count + 1)]
    epoch, seqs = host.emit(session, events)
    assert epoch == ready["epoch"] and seqs == list(range(1, count + 1))
    status, _, body = host.status(session)
    assert (body["first_seq"], body["last_seq"], body["count"]) == (count - 4, count, 5), body
    return epoch, watcher, events


def test_resume_from_an_evicted_seq_gets_reset_then_what_is_held(host):
    session = "reset-evicted"

    async def scenario():
        epoch, watcher, events = await small_session(host, session, 8)
        held = stamped(events[3:], 4)
        try:
            # Event 3 is gone: reset (first_seq 4), then 4..8.
            async with session_connect(host, f"/ws/small/{session}?last_seq=2&epoch={epoch}") as ws:
                seen = await read_events(ws, 8)
                expect_ready(seen[0], session, 8, epoch=epoch)
                expect_reset(seen[1], session, epoch, 8, 4)
                assert seen[2:] == held
                # Nothing more (no second reset) before the next live event.
                host.emit(session, {"type": "step", "n": 9})
                assert await recv_json(ws) == {"seq": 9, "type": "step", "n": 9}
            # The same with the resume message.
            async with session_connect(host, f"/ws/small/{session}") as ws:
                await ws.send(json.dumps({"type": "resume", "last_seq": 3, "epoch": epoch}))
                seen = await read_events(ws, 9)
                expect_reset(seen[1], session, epoch, 9, 5)
                assert seen[2:] == stamped(events[4:] + [{"type": "step", "n": 9}], 5)
            # Resuming right before the oldest held event is no gap: no reset.
            async with session_connect(host, f"/ws/small/{session}?last_seq=4&epoch={epoch}") as ws:
                seen = await read_events(ws, 9)
                expect_ready(seen[0], session, 9, epoch=epoch)
                assert [m["seq"] for m in seen[1:]] == [5, 6, 7, 8, 9]
        finally:
            await watcher.close()

    run(scenario())


@pytest.mark.parametrize("resume", ["foreign epoch", "seq past the latest"])
def test_resume_that_starts_over_gets_one_reset_then_everything_held(host, resume):
    session = f"reset-{resume.replace(' ', '-')}"

    async def scenario():
        epoch, watcher, events = await small_session(host, session, 8)
        query = "?last_seq=7&epoch=0123456789abcdef" if resume == "foreign epoch" else f"?last_seq=50&epoch={epoch}"
        try:
            async with session_connect(host, f"/ws/small/{session}{query}") as ws:
                seen = await read_events(ws, 8)
                expect_ready(seen[0], session, 8, epoch=epoch)
                expect_reset(seen[1], session, epoch, 8, 4)
                assert seen[2:] == stamped(events[3:], 4), [m["type"] for m in seen]
        finally:
            await watcher.close()

    run(scenario())


@pytest.mark.parametrize("resume", ["seq past the latest", "foreign epoch"])
def test_reset_arrives_at_once_when_nothing_is_held(host, resume):
    session = f"reset-empty-{resume.replace(' ', '-')}"
    query = "?last_seq=5" if resume == "seq past the latest" else "?last_seq=0&epoch=0123456789abcdef"

    async def scenario():
        async with session_connect(host, f"/ws/progress/{session}{query}") as ws:
            ready = await recv_json(ws)
            expect_ready(ready, session, 0)
            # A missing flush means never: 2 s is plenty.
            expect_reset(await recv_json(ws, timeout=2, what="reset"), session, ready["epoch"], 0, None)

    run(scenario())


# 6. Closing and retention --------------------------------------------------------------------------


def test_a_closing_event_closes_the_session_which_stays_readable_during_retain(host):
    session = "closing"
    events = [{"type": "step", "n": 1}, {"type": "step", "n": 2}, {"type": "complete", "result": "ok"}]

    async def scenario():
        async with session_connect(host, "/ctl") as ctl_ws:
            ctl = Ctl(ctl_ws)
            epoch, seqs = host.emit(session, events)
            assert seqs == [1, 2, 3]
            status, _, body = host.status(session)
            assert status == 200 and body["state"] == "closed" and body["last_seq"] == 3, body

            status, _, body = host.post_events(session, {"type": "step", "n": 4})
            assert status == 409 and "closed" in body["error"] and body["seqs"] == [], body
            reply = await ctl.call({"type": "emit", "session": session, "event": {"type": "step"}})
            assert not reply["ok"] and "closed" in reply["error"], reply

            # Readable during retain: over HTTP, and by a new WebSocket client.
            status, _, body = host.http("GET", f"/sessions/{session}/events")
            assert status == 200 and body["state"] == "closed" and body["events"] == stamped(events, 1), body
            async with session_connect(host, f"/ws/progress/{session}?last_seq=0") as ws:
                expect_ready(await recv_json(ws), session, 3, state="closed", epoch=epoch)
                assert [await recv_json(ws) for _ in range(3)] == stamped(events, 1)
            async with session_connect(host, f"/ws/progress/{session}") as ws:
                expect_ready(await recv_json(ws), session, 3, state="closed", epoch=epoch)
                assert [await recv_json(ws) for _ in range(3)] == stamped(events, 1)

        # retain = 1 s and the sweeper runs every second: gone within a few seconds.
        deadline = time.monotonic() + 6
        while (status := host.status(session)[0]) != 404:
            assert status == 200 and time.monotonic() < deadline, f"session still there after retain: {status}"
            await asyncio.sleep(0.1)
        assert host.http("GET", f"/sessions/{session}/events")[0] == 404

        # A client holding the old epoch meets a new incarnation: reset, then its events. (The
        # reset is only flushed with the next event: see test_reset_arrives_at_once_when_nothing_is_held.)
        async with session_connect(host, f"/ws/progress/{session}?last_seq=3&epoch={epoch}") as ws:
            ready = await recv_json(ws)
            expect_ready(ready, session, 0)
            assert ready["epoch"] != epoch
            assert host.emit(session, {"type": "step", "n": 1}) == (ready["epoch"], [1])
            reset = await recv_json(ws)
            # The reset describes the session when the client joined: before or after that append.
            assert (reset["seq"], reset["first_seq"]) in ((0, None), (1, 1)), reset
            expect_reset(reset, session, ready["epoch"], reset["seq"], reset["first_seq"])
            assert await recv_json(ws) == {"seq": 1, "type": "step", "n": 1}

    run(scenario())


def test_an_error_event_also_closes_the_session(host):
    session = "closing-error"
    host.emit(session, [{"type": "step"}, {"type": "error", "message": "boom"}])
    status, _, body = host.status(session)
    assert body["state"] == "closed" and body["last_seq"] == 2, body
    assert host.post_events(session, [{"type": "step"}])[0] == 409


# 7. The HTTP API -----------------------------------------------------------------------------------


def test_http_api_appends_reads_and_reports(host):
    session = "http-api"
    status, headers, body = host.post_events(session, {"type": "one"})
    assert status == 201 and headers["Content-Type"] == "application/json", body
    assert body["session"] == session and body["seqs"] == [1] and body["epoch"], body
    epoch = body["epoch"]
    batch = [{"type": "two", "x": [1, 2]}, {"type": "three"}, {"type": "four", "s": "é\"\\"}]
    status, _, body = host.post_events(session, batch)
    assert (status, body) == (201, {"session": session, "epoch": epoch, "seqs": [2, 3, 4]})

    status, _, body = host.http("GET", f"/sessions/{session}/events?after=2")
    assert status == 200, body
    assert body["session"] == session and body["epoch"] == epoch and body["state"] == "open", body
    assert body["last_seq"] == 4 and body["gap"] is False, body
    assert body["events"] == stamped(batch[1:], 3)
    status, _, body = host.http("GET", f"/sessions/{session}/events")
    assert [event["seq"] for event in body["events"]] == [1, 2, 3, 4]
    assert host.http("GET", f"/sessions/{session}/events?after=4")[2]["events"] == []

    status, _, body = host.status(session)
    assert status == 200
    assert body["session"] == session and body["state"] == "open" and body["epoch"] == epoch, body
    assert (body["first_seq"], body["last_seq"], body["count"], body["subscribers"]) == (1, 4, 4, 0), body
    assert body["bytes"] > 0, body


def test_http_api_rejects_bad_input_with_json_errors(host):
    session = "http-bad"
    host.emit(session, {"type": "exists"})

    def expect_error(reply, status):
        got, headers, body = reply
        assert got == status, (got, body)
        assert headers["Content-Type"] == "application/json" and isinstance(body["error"], str) and body["error"], body
        return body

    assert "invalid JSON" in expect_error(host.post_events(session, b'{"type": '), 400)["error"]
    assert "seq" in expect_error(host.post_events(session, {"type": "x", "seq": 7}), 400)["error"]
    expect_error(host.post_events(session, [3, {"type": "x"}]), 400)
    expect_error(host.post_events(session, b"42"), 400)
    expect_error(host.http("GET", f"/sessions/{session}/events?after=x"), 400)
    expect_error(host.http("GET", f"/sessions/{session}/events?after=-1"), 400)
    expect_error(host.status("no-such-session"), 404)
    expect_error(host.http("GET", "/sessions/no-such-session/events"), 404)
    expect_error(host.http("PUT", f"/sessions/{session}/events", b"{}"), 405)
    assert host.http("PUT", f"/sessions/{session}/events", b"{}")[1]["Allow"] == "GET, POST"
    expect_error(host.http("DELETE", f"/sessions/{session}"), 405)
    assert host.http("POST", f"/sessions/{session}", b"{}")[1]["Allow"] == "GET"
    big = json.dumps({"type": "big", "pad": "x" * (1 << 20)}).encode()
    expect_error(host.post_events(session, big), 413)
    # None of that appended anything.
    assert host.status(session)[2]["last_seq"] == 1


@pytest.mark.parametrize("bad", [3, {"type": "x", "seq": 9}], ids=["not an object", "own seq"])
def test_a_refused_batch_appends_nothing(host, bad):
    session = f"http-batch-{'seq' if isinstance(bad, dict) else 'scalar'}"
    host.emit(session, {"type": "first"})
    status, _, body = host.post_events(session, [{"type": "good"}, bad])
    assert status == 400, body
    assert host.status(session)[2]["last_seq"] == 1, "the refused batch was partly appended"


def test_http_publishing_requires_the_session_token_when_set(tmp_path):
    (tmp_path / "s.lua").write_text('return endpoint { path = "/ws/progress/:session", session = {} }\n')
    server = Host(tmp_path, "--session-token", "secret").start()
    try:
        event = {"type": "guarded"}
        status, headers, body = server.post_events("guarded", event)
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer" and body["error"], body
        status, _, body = server.post_events("guarded", event, token="wrong")
        assert status == 401 and body["error"], body
        status, _, body = server.post_events("guarded", event, token="secre")
        assert status == 401, body
        assert server.status("guarded")[0] == 404, "a refused POST must not create the session"
        status, _, body = server.post_events("guarded", event, token="secret")
        assert status == 201 and body["seqs"] == [1], body
        # Reading needs no token.
        status, _, body = server.http("GET", "/sessions/guarded/events")
        assert status == 200 and body["events"] == [{"seq": 1, **event}], body
    finally:
        assert server.stop() == 0, server.log_text()


# 8. Lua: emit, session_status, close_session ------------------------------------------------------


def test_lua_session_status_and_close_session(host):
    session = "lua-api"

    async def scenario():
        async with session_connect(host, "/ctl") as ctl_ws:
            ctl = Ctl(ctl_ws)
            reply = await ctl.call({"type": "status", "session": session})
            assert reply["found"] is False, reply
            reply = await ctl.call({"type": "emit", "session": session, "event": {"type": "a"}})
            assert reply == {"type": "emitted", "ok": True, "seq": 1, "id": reply["id"]}
            reply = await ctl.call({"type": "emit", "session": session, "text": '{"type":"b","k":[1]}'})
            assert reply["ok"] and reply["seq"] == 2, reply
            for bad in ({"event": {"type": "c", "seq": 3}}, {"text": "[1, 2]"}, {"text": "{nope"}):
                reply = await ctl.call({"type": "emit", "session": session, **bad})
                assert not reply["ok"] and "emit" in reply["error"], reply

            async with session_connect(host, f"/ws/progress/{session}?last_seq=2") as ws:
                expect_ready(await recv_json(ws), session, 2)
                lua = (await ctl.call({"type": "status", "session": session}))["status"]
                status, _, http = host.status(session)
                fields = {"session", "state", "epoch", "first_seq", "last_seq", "count", "bytes", "subscribers"}
                assert set(lua) == fields and lua == http, (lua, http)
                summary = (lua["session"], lua["state"], lua["first_seq"], lua["last_seq"], lua["count"])
                assert summary == (session, "open", 1, 2, 2), lua
                assert lua["subscribers"] == 1 and lua["bytes"] > 0

                await ctl.call({"type": "close", "session": session})
                lua = (await ctl.call({"type": "status", "session": session}))["status"]
                assert lua["state"] == "closed" and lua["last_seq"] == 2, lua
                reply = await ctl.call({"type": "emit", "session": session, "event": {"type": "late"}})
                assert not reply["ok"] and "closed" in reply["error"], reply
                assert host.post_events(session, {"type": "late"})[0] == 409
            async with session_connect(host, f"/ws/progress/{session}?last_seq=0") as ws:
                seen = await read_events(ws, 2)
                expect_ready(seen[0], session, 2, state="closed")
                assert [m["seq"] for m in seen[1:]] == [1, 2]

            # Closing a session that does not exist is a no-op and does not create it.
            await ctl.call({"type": "close", "session": "lua-never"})
            assert (await ctl.call({"type": "status", "session": "lua-never"}))["found"] is False
            assert host.status("lua-never")[0] == 404

    run(scenario())


# 9. A session endpoint asked for no session ------------------------------------------------------


def test_session_endpoint_without_a_session_id_is_refused_before_upgrade(host):
    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            async with session_connect(host, "/ws/s"):
                pass
        assert refused.value.response.status_code == 400
        assert b"'id'" in refused.value.response.body
        with pytest.raises(InvalidStatus) as refused:
            async with session_connect(host, "/ws/s?id="):
                pass
        assert refused.value.response.status_code == 400
        async with session_connect(host, "/ws/s?id=named-by-query") as ws:
            expect_ready(await recv_json(ws), "named-by-query", 0)

    run(scenario())
    status, _, text = host.http("GET", "/ws/s", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert status == 400 and "id" in text, (status, text)


# Host bugs found while writing these tests ---------------------------------------------------------


def test_no_session_event_follows_the_servers_close_frame(host):
    session = "after-close"
    client = RawClient(host.port, f"/ws/progress/{session}?last_seq=0")
    try:
        opcode, payload = client.read_frame()
        assert opcode == TEXT and json.loads(payload)["type"] == "ready"
        client.send(masked_frame(TEXT, json.dumps({"type": "kick"})))
        opcode, payload = client.read_frame()
        assert opcode == CLOSE and payload[:2] == (1012).to_bytes(2, "big"), (opcode, payload)
        # The server waits (2 s) for our close frame before it drops the socket; an event emitted
        # meanwhile must not be sent. (We never answer, so the event cannot lose a race with our
        # close frame: whatever the server sends before the socket goes is seen.)
        host.emit(session, {"type": "late"})
        assert client.frames_until_eof() == []
    finally:
        client.close()


def test_replay_of_a_history_larger_than_the_outbound_limit_reaches_the_client(tmp_path):
    # Session defaults (history 1000, max_bytes 1 MiB) with --max-outbound-buffer 256 KiB: a
    # history the session is allowed to hold is more than may wait for one client.
    outbound_limit = 262144
    (tmp_path / "s.lua").write_text('return endpoint { path = "/ws/progress/:session", session = {} }\n')
    server = Host(tmp_path, "--max-outbound-buffer", outbound_limit).start()
    session = "big-replay"
    pad = "r" * 600

    async def scenario():
        for start in (0, 500):
            server.emit(session, [{"type": "big", "n": n, "pad": pad} for n in range(start + 1, start + 501)])
        status, _, body = server.status(session)
        assert body["count"] == 1000 and 2 * outbound_limit < body["bytes"] < 1 << 20, body
        async with session_connect(server, f"/ws/progress/{session}?last_seq=0") as ws:
            seen = await read_events(ws, 1000, timeout=15)
            assert [m["seq"] for m in seen[1:]] == list(range(1, 1001))

    try:
        run(scenario())
    finally:
        assert server.stop() == 0, server.log_text()


def test_a_stalled_session_client_costs_no_memory_and_resumes_with_nothing_lost(tmp_path):
    """A session client that stops reading is fed no faster than it reads (its replay waits in
    the shared history, not in a per-client buffer), is dropped when it stops answering pings,
    and on reconnecting gets every event, in order."""
    from hostile_support import RawClient as StalledClient

    (tmp_path / "progress.lua").write_text(
        'return endpoint { path = "/ws/p/:session", session = { history = 5000, max_bytes = 67108864 },'
        ' keepalive = { ping_every = 0.5, timeout = 0.5 } }\n'
    )
    host = Host(tmp_path, "--max-outbound-buffer", "65536").start()
    try:
        stalled = StalledClient(host.port, rcvbuf=4096).upgrade("/ws/p/slow?last_seq=0", host.port)
        _, _, _, ready = stalled.read_frame()
        assert json.loads(ready)["type"] == "ready"
        padding = "x" * 2000
        for start in range(0, 2000, 100):
            host.emit("slow", [{"type": "step", "n": n, "pad": padding} for n in range(start + 1, start + 101)])
        rss_after_emits = host.rss_kib()
        host.wait_for_log(lambda line: "did not answer a ping" in line, timeout=10)
        assert not any("slow consumer" in line for line in host.lines)
        assert host.rss_kib() - rss_after_emits < 16 * 1024
        stalled.close()

        async def resume():
            async with session_connect(host, "/ws/p/slow?last_seq=0") as ws:
                return await read_events(ws, 2000, timeout=30)

        steps = [m for m in asyncio.run(resume()) if m.get("type") == "step"]
        assert [m["seq"] for m in steps] == list(range(1, 2001))
    finally:
        assert host.stop() == 0
