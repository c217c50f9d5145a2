"""Several hosts, one system (README, "Running several hosts"): hosts started with --cluster on one
throwaway PostgreSQL share their sessions. Events posted to one host reach clients of the others in
order, appends from every host get unique consecutive seqs, a client resumes on any host with
nothing lost or repeated (through clean moves, killed sockets, a killed host and a restart of
PostgreSQL), and a database the host cannot use stops it with an error that names the problem.

Each test has a schema of its own on the shared server. Every wait is bounded and waits on an event
(a log line, a message, an HTTP answer, a process exit).

Run: python3 -m pytest -q Tests/acceptance/test_cluster.py
"""

import asyncio
import json
import random
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest

from moongate_process import MOONGATE
from postgres_server import fresh_schema, free_port
from session_support import Ctl, Host, read_events, recv_json, session_connect

SCRIPTS = {
    "progress.lua": r"""
endpoint { path = "/ws/progress/:session", session = { history = 10000, resume_wait = 0.2 } }
return endpoint { path = "/ws/custom/:session", session = { closes_on = { "done" }, resume_wait = 0.2 } }
""",
    "ctl.lua": r"""
return endpoint {
  path = "/ctl",
  on = {
    emit = function(conn, msg)
      local ok, result = pcall(emit, msg.session, { type = "from_lua", n = msg.n })
      if ok then return { ok = true, seq = result, id = msg.id } end
      return { ok = false, error = tostring(result), id = msg.id }
    end,
    status = function(conn, msg)
      return { id = msg.id, status = session_status(msg.session) }
    end,
    publish = function(conn, msg)
      publish(msg.path, { type = "published", n = msg.n })
      return { id = msg.id }
    end,
    whoami = function(conn, msg)
      return { id = msg.id, node = cluster.node_id, nodes = cluster.nodes() }
    end,
  },
}
""",
    "leader.lua": r"""
local polls = 0
return endpoint {
  path = "/leader",
  watch = {
    every = 0.2,
    leader = true,
    poll = function()
      polls = polls + 1
      return { type = "state", by = cluster.node_id, polls = polls }
    end,
  },
}
""",
    "feed.lua": r"""
endpoint {
  path = "/feed",
  on = {
    say = function(conn, msg) broadcast({ type = "said", n = msg.n, pad = string.rep("x", msg.size or 0) }) end,
  },
}
endpoint { path = "/rooms/:room" }
return endpoint {
  path = "/ticker",
  history = { size = 1000 },
  initial = { type = "state" },
  on = { tick = function(conn, msg) broadcast({ type = "tick", n = msg.n, from = msg.from }) end },
}
""",
}


@pytest.fixture
def scripts(tmp_path):
    folder = tmp_path / "scripts"
    folder.mkdir()
    for name, text in SCRIPTS.items():
        (folder / name).write_text(text)
    return folder


class Cluster:
    """Hosts on one schema of the test server, stopped at the end."""

    def __init__(self, postgres, scripts):
        self.postgres = postgres
        self.scripts = scripts
        self.schema = fresh_schema()
        self.hosts = []

    def start(self, count, **kwargs):
        hosts = [self.host(f"node-{len(self.hosts) + index}") for index in range(count)]
        # Started together: they migrate one fresh schema at once.
        threads = [threading.Thread(target=host.start) for host in hosts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for host in hosts:
            assert host.port is not None, host.log_text()
        self.hosts += hosts
        return hosts

    def host(self, node_id):
        return Host(self.scripts, "--cluster", self.postgres.url, "--cluster-schema", self.schema, "--node-id", node_id)

    def stop(self):
        for host in self.hosts:
            if host.alive():
                host.stop()


@pytest.fixture
def cluster(postgres, scripts):
    made = Cluster(postgres, scripts)
    yield made
    made.stop()


def events_only(messages):
    return [m for m in messages if m.get("type") == "step"]


async def collect(host, session, through, query="?last_seq=0"):
    async with session_connect(host, f"/ws/progress/{session}{query}") as ws:
        return events_only(await read_events(ws, through, timeout=30))


def test_posts_on_one_host_reach_clients_of_the_others_in_order(cluster):
    a, b, c = cluster.start(3)

    async def scenario():
        async with session_connect(b, "/ws/progress/job?last_seq=0") as on_b, session_connect(c, "/ws/progress/job?last_seq=0") as on_c:
            ready_b, ready_c = await recv_json(on_b), await recv_json(on_c)
            assert ready_b["type"] == ready_c["type"] == "ready"
            assert ready_b["epoch"] == ready_c["epoch"]
            epoch, seqs = a.emit("job", [{"type": "step", "n": n} for n in range(1, 101)])
            assert epoch == ready_b["epoch"] and seqs == list(range(1, 101))
            for n in range(101, 201):
                assert a.emit("job", {"type": "step", "n": n})[1] == [n]
            for ws in (on_b, on_c):
                got = events_only(await read_events(ws, 200, timeout=30))
                assert [(m["seq"], m["n"]) for m in got] == [(n, n) for n in range(1, 201)]

    asyncio.run(scenario())
    # Status and history are the cluster's, on every host.
    for host in (a, b, c):
        status, _, body = host.status("job")
        assert status == 200 and body["last_seq"] == 200 and body["epoch"] == cluster.hosts[1].status("job")[2]["epoch"]
        status, _, history = host.http("GET", "/sessions/job/events?after=190")
        assert status == 200 and [e["seq"] for e in history["events"]] == list(range(191, 201))
    assert a.http("GET", "/readyz")[0] == 200


def test_concurrent_appends_from_every_host_get_unique_consecutive_seqs(cluster):
    hosts = cluster.start(3)
    per_thread, threads_per_host = 40, 3
    seqs, errors = [], []
    lock = threading.Lock()

    def producer(host, worker):
        for n in range(per_thread):
            status, _, body = host.post_events("shared", {"type": "step", "n": n, "from": f"{host.port}/{worker}"})
            with lock:
                (seqs.extend(body["seqs"]) if status == 201 else errors.append((status, body)))

    threads = [threading.Thread(target=producer, args=(host, w)) for host in hosts for w in range(threads_per_host)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = per_thread * threads_per_host * len(hosts)
    assert errors == []
    assert sorted(seqs) == list(range(1, total + 1))
    for host in hosts:
        got = asyncio.run(collect(host, "shared", total))
        assert [m["seq"] for m in got] == list(range(1, total + 1))


def test_a_client_moving_between_hosts_gets_every_event_exactly_once(cluster):
    hosts = cluster.start(3)
    total, moves = 2000, 50
    rng = random.Random(20261202)  # the consumer's moves
    producer_rng = random.Random(1202)  # which host each batch goes to
    done = threading.Event()

    def producer():
        n = 1
        while n <= total:
            batch = [{"type": "step", "n": k} for k in range(n, min(n + 20, total + 1))]
            host = producer_rng.choice(hosts)
            status, _, body = host.post_events("moving", batch)
            assert status == 201, body
            n += len(batch)
        done.set()

    async def consumer():
        seen, epoch = [], None
        for move in range(moves + 1):
            host = hosts[move % len(hosts)]
            query = "?last_seq=%d" % (seen[-1] if seen else 0) + (f"&epoch={epoch}" if epoch else "")
            ws = await session_connect(host, f"/ws/progress/moving{query}").__aenter__()
            ready = await recv_json(ws)
            assert ready["type"] == "ready"
            epoch = ready["epoch"]
            want = 2000 if move == moves else min(total, (seen[-1] if seen else 0) + rng.randint(5, 60))
            while not seen or seen[-1] < want:
                message = await recv_json(ws, 30, f"event {want} on move {move}")
                assert message["type"] != "reset", message
                if message["type"] == "step":
                    seen.append(message["seq"])
                    if move < moves and seen[-1] >= want:
                        break
            if move % 2:
                await ws.close()  # a clean close
            else:
                ws.transport.abort()  # a killed socket: no close frame
        return seen

    thread = threading.Thread(target=producer)
    thread.start()
    seen = asyncio.run(consumer())
    thread.join()
    assert done.is_set()
    assert seen == list(range(1, total + 1))


def test_lua_emit_on_one_host_reaches_the_others_and_status_is_shared(cluster):
    a, b = cluster.start(2)

    async def scenario():
        async with session_connect(b, "/ws/progress/lua?last_seq=0") as watcher, session_connect(a, "/ctl") as ctl_ws:
            ctl = Ctl(ctl_ws)
            assert (await recv_json(watcher))["type"] == "ready"
            for n in range(1, 6):
                reply = await ctl.call({"type": "emit", "session": "lua", "n": n})
                assert reply["ok"] and reply["seq"] == n, reply
            got = []
            while len(got) < 5:
                message = await recv_json(watcher)
                if message["type"] == "from_lua":
                    got.append((message["seq"], message["n"]))
            assert got == [(n, n) for n in range(1, 6)]
        async with session_connect(b, "/ctl") as ctl_ws:
            # B holds a copy now; a session only A's clients touched is read from the log.
            a.emit("only-a", {"type": "step", "n": 1})
            status = (await Ctl(ctl_ws).call({"type": "status", "session": "only-a"}))["status"]
            assert status["last_seq"] == 1 and status["state"] == "open"

    asyncio.run(scenario())


def test_a_killed_host_loses_nothing_its_clients_resume_elsewhere(cluster):
    a, b = cluster.start(2)

    async def scenario():
        async with session_connect(a, "/ws/progress/crash?last_seq=0") as on_a:
            epoch = (await recv_json(on_a))["epoch"]
            b.emit("crash", [{"type": "step", "n": n} for n in range(1, 51)])
            seen = [m["seq"] for m in events_only(await read_events(on_a, 50, timeout=30))]
            a.process.send_signal(signal.SIGKILL)
            a.process.wait(timeout=10)
            b.emit("crash", [{"type": "step", "n": n} for n in range(51, 101)])
        got = await collect(b, "crash", 100, f"?last_seq={seen[-1]}&epoch={epoch}")
        assert seen + [m["seq"] for m in got] == list(range(1, 101))

    asyncio.run(scenario())


def test_a_postgres_restart_mid_stream_loses_and_repeats_nothing_acknowledged(cluster, postgres):
    a, b = cluster.start(2)
    accepted, refused, problems = [], [], []
    stop = threading.Event()
    progress = threading.Condition()

    def producer():
        n = 0
        try:
            while not stop.is_set():
                n += 1
                started = time.monotonic()
                status, _, body = a.post_events("outage", {"type": "step", "n": n})
                with progress:
                    if status == 201:
                        accepted.extend(body["seqs"])
                    elif status == 503 and "error" in body:
                        refused.append(time.monotonic() - started)
                    else:
                        problems.append((status, body))
                    progress.notify_all()
        except Exception as error:  # surfaced by wait_for_accepted
            with progress:
                problems.append(repr(error))
                progress.notify_all()

    def wait_for_accepted(count, timeout=30):
        with progress:
            assert progress.wait_for(lambda: len(accepted) >= count or problems, timeout), f"{len(accepted)} accepted"
            assert problems == []

    async def scenario():
        async with session_connect(b, "/ws/progress/outage?last_seq=0") as on_b:
            await recv_json(on_b)
            thread = threading.Thread(target=producer)
            thread.start()
            try:
                await asyncio.to_thread(wait_for_accepted, 20)
                mark = a.log_mark()
                await asyncio.to_thread(postgres.restart)
                a.wait_for_log(lambda l: "reachable again" in l, timeout=30, since=mark, what="the reconnect")
                await asyncio.to_thread(wait_for_accepted, len(accepted) + 20)
            finally:
                stop.set()
                thread.join()
            # Acknowledged appends are delivered once each, in order, with no gap between them;
            # an append cut off after its commit but before its answer (a 503) may be there too.
            assert accepted == sorted(accepted)
            got = [m["seq"] for m in events_only(await read_events(on_b, accepted[-1], timeout=30))]
            assert got == list(range(1, accepted[-1] + 1))
            assert set(accepted) <= set(got)
            assert len(got) - len(accepted) <= len(refused)
            # Refusals are fast: nothing waited on a database that was gone.
            assert all(seconds < 2 for seconds in refused), refused

    asyncio.run(scenario())
    assert any("lost PostgreSQL" in line for line in a.lines), a.log_text()
    from test_metrics import scrape, value

    assert value(scrape(a), "moongate_cluster_postgres_errors_total", operation="listen") >= 1


def start_failure(scripts, url, *extra):
    result = subprocess.run(
        [str(MOONGATE), "serve", str(scripts), "--port", "0", "--cluster", url, *extra],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    return result.stderr


def test_start_up_errors_name_the_problem(postgres, scripts):
    parsed = urllib.parse.urlparse(postgres.url)
    host_port = f"127.0.0.1:{parsed.port}"
    assert "not a postgres:// URL" in start_failure(scripts, "mysql://u:p@localhost/db")
    assert "no database name" in start_failure(scripts, f"postgres://moongate:moongate@{host_port}")
    assert "connection refused" in start_failure(scripts, f"postgres://moongate:moongate@127.0.0.1:{free_port()}/moongate")
    assert "refused the password for user moongate" in start_failure(scripts, f"postgres://moongate:wrong@{host_port}/moongate")
    assert "database nowhere does not exist" in start_failure(scripts, f"postgres://moongate:moongate@{host_port}/nowhere")
    assert "is not a plain name" in start_failure(scripts, postgres.url, "--cluster-schema", "x; DROP TABLE y")
    assert "exclude each other" in start_failure(scripts, postgres.url, "--journal", str(scripts / "j.sqlite"))


def test_a_unix_socket_url_and_the_environment_variable_work(postgres, scripts):
    parsed = urllib.parse.urlparse(postgres.url)
    socket_url = f"postgres://moongate:moongate@{urllib.parse.quote(postgres.socket_dir, safe='')}:{parsed.port}/moongate"
    schema = fresh_schema()
    import os

    host = Host(scripts, "--cluster-schema", schema, env={**os.environ, "MOONGATE_CLUSTER": socket_url}).start()
    try:
        epoch, seqs = host.emit("sock", {"type": "step", "n": 1})
        assert seqs == [1]
        assert postgres.psql(f'SELECT epoch, last_seq FROM "{schema}".sessions WHERE id = \'sock\'') == f"{epoch}|1"
    finally:
        assert host.stop() == 0


async def messages_of(ws, kind, count, timeout=30):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        message = await recv_json(ws, max(deadline - time.monotonic(), 0.001), f"{count} {kind} messages (got {len(got)})")
        if message.get("type") == kind:
            got.append(message)
    return got


def test_broadcast_and_publish_reach_the_clients_of_every_host_in_order(cluster):
    a, b = cluster.start(2)

    async def scenario():
        async with session_connect(a, "/feed") as speaker, session_connect(b, "/feed") as listener, \
                session_connect(b, "/rooms/r1") as room1, session_connect(b, "/rooms/r2") as room2, \
                session_connect(a, "/ctl") as ctl_ws:
            # Listening already on B before A broadcasts: B's node row says it is up.
            for n in range(1, 51):
                # Every tenth is larger than a NOTIFY can carry.
                await speaker.send(json.dumps({"type": "say", "n": n, "size": 9000 if n % 10 == 0 else 10}))
            heard = await messages_of(listener, "said", 50)
            assert [m["n"] for m in heard] == list(range(1, 51))
            assert len(heard[9]["pad"]) == 9000
            assert [m["n"] for m in await messages_of(speaker, "said", 50)] == list(range(1, 51))

            ctl = Ctl(ctl_ws)
            for n in (1, 2, 3):
                await ctl.call({"type": "publish", "path": "/rooms/r1", "n": n})
            assert [m["n"] for m in await messages_of(room1, "published", 3)] == [1, 2, 3]
            await ctl.call({"type": "publish", "path": "/rooms/r2", "n": 9})
            assert (await messages_of(room2, "published", 1))[0]["n"] == 9
            with pytest.raises(AssertionError):
                await messages_of(room1, "published", 1, timeout=0.5)

    asyncio.run(scenario())


def test_an_endpoint_history_is_one_numbered_stream_for_the_cluster(cluster):
    a, b = cluster.start(2)

    async def scenario():
        async with session_connect(a, "/ticker") as on_a, session_connect(b, "/ticker") as on_b:
            ready_a, ready_b = await recv_json(on_a), await recv_json(on_b)
            assert ready_a["epoch"] == ready_b["epoch"] and ready_a["seq"] == ready_b["seq"] == 0
            await recv_json(on_a), await recv_json(on_b)  # the initial state

            async def ticks(ws, name):
                for n in range(1, 31):
                    await ws.send(json.dumps({"type": "tick", "n": n, "from": name}))

            await asyncio.gather(ticks(on_a, "a"), ticks(on_b, "b"))
            seen_a = await messages_of(on_a, "tick", 60)
            seen_b = await messages_of(on_b, "tick", 60)
            # One numbering, the same on both hosts, each host's ticks in the order sent.
            assert [m["seq"] for m in seen_a] == list(range(1, 61))
            assert [(m["seq"], m["from"], m["n"]) for m in seen_a] == [(m["seq"], m["from"], m["n"]) for m in seen_b]
            for name in ("a", "b"):
                assert [m["n"] for m in seen_a if m["from"] == name] == list(range(1, 31))
            epoch = ready_a["epoch"]

        # Resuming on the other host: exactly what was missed, no snapshot.
        async with session_connect(b, f"/ticker?last_seq=50&epoch={epoch}") as resumed:
            assert (await recv_json(resumed))["type"] == "ready"
            assert [m["seq"] for m in await messages_of(resumed, "tick", 10)] == list(range(51, 61))

    asyncio.run(scenario())


def test_one_host_runs_a_leader_watcher_and_another_takes_over_when_it_dies(cluster):
    hosts = cluster.start(3)
    by_node = {f"node-{index}": host for index, host in enumerate(hosts)}

    async def scenario():
        clients = [await session_connect(host, "/leader").__aenter__() for host in hosts]
        try:
            # Every host's clients see the one leader's values.
            firsts = [await messages_of(ws, "state", 3, timeout=15) for ws in clients]
            leaders = {m["by"] for got in firsts for m in got}
            assert len(leaders) == 1, firsts
            leader = leaders.pop()
            survivors = [i for i, host in enumerate(hosts) if host is not by_node[leader]]
            by_node[leader].process.send_signal(signal.SIGKILL)
            by_node[leader].process.wait(timeout=10)
            took_over = set()
            for index in survivors:
                deadline = time.monotonic() + 15
                while True:
                    message = await recv_json(clients[index], max(deadline - time.monotonic(), 0.001), "the new leader's value")
                    if message.get("type") == "state" and message["by"] != leader:
                        took_over.add(message["by"])
                        break
            assert len(took_over) == 1 and leader not in took_over
            # A new client of a host that does not poll gets the latest value at once.
            follower = next(i for i in survivors if f"node-{i}" not in took_over)
            async with session_connect(hosts[follower], "/leader") as late:
                first = await recv_json(late)
                assert first["type"] == "state" and first["by"] in took_over
            async with session_connect(hosts[follower], "/ctl") as ctl_ws:
                deadline = time.monotonic() + 15
                while True:
                    reply = await Ctl(ctl_ws).call({"type": "whoami"})
                    assert reply["node"] == f"node-{follower}"
                    seen = {node["id"] for node in reply["nodes"]}
                    if seen == {f"node-{i}" for i in survivors}:
                        break
                    assert time.monotonic() < deadline, reply["nodes"]
                    await asyncio.sleep(0.5)  # node rows age out on the heartbeat's clock
                assert all(node["address"].startswith("127.0.0.1:") and "connections" in node for node in reply["nodes"])
        finally:
            for ws in clients:
                ws.transport.abort()

    asyncio.run(scenario())


def test_metrics_and_the_console_show_the_cluster(cluster):
    from websockets.sync.client import connect as sync_connect

    from test_metrics import scrape, value

    a, b = cluster.start(2)

    async def one_delivery():
        async with session_connect(b, "/ws/progress/seen?last_seq=0") as on_b:
            await recv_json(on_b)
            for n in range(1, 6):
                a.emit("seen", {"type": "step", "n": n})
                await read_events(on_b, n)

    asyncio.run(one_delivery())
    deadline = time.monotonic() + 15
    while True:
        samples = scrape(b)
        if value(samples, "moongate_cluster_nodes") == 2:
            break
        assert time.monotonic() < deadline, "b never saw 2 nodes"
        time.sleep(0.5)  # the node count changes on the heartbeat's clock
    assert value(samples, "moongate_cluster_wake_to_delivery_seconds_count") >= 1
    assert value(samples, "moongate_cluster_pull_duration_seconds_count") >= 1
    with sync_connect(b.url("/console/live"), origin=f"http://127.0.0.1:{b.port}", open_timeout=10) as ws:
        snapshot = json.loads(ws.recv(timeout=10))
    assert snapshot["node_id"] == "node-1"
    assert sorted(node["id"] for node in snapshot["nodes"]) == ["node-0", "node-1"]


def test_closing_and_reading_your_own_writes_follow_the_logs_settings(cluster):
    a, b = cluster.start(2)

    async def scenario():
        # The session is created by B's endpoint, which closes it on "done" only.
        async with session_connect(b, "/ws/custom/job?last_seq=0") as on_b, session_connect(a, "/ws/custom/job?last_seq=0") as on_a:
            assert (await recv_json(on_b))["type"] == (await recv_json(on_a))["type"] == "ready"
            # "complete" closes sessions by the host's defaults, not this one.
            assert a.post_events("job", {"type": "complete"})[0] == 201
            status, _, history = a.http("GET", "/sessions/job/events")
            assert status == 200 and history["last_seq"] == 1 and history["state"] == "open"
            assert b.post_events("job", {"type": "done"})[0] == 201
            for ws in (on_a, on_b):
                got = await read_events(ws, 2)
                assert [m["type"] for m in got if "seq" in m and m["type"] != "ready"][-1] == "done"
        status, _, body = a.post_events("job", {"type": "more"})
        assert status == 409, body
        assert a.status("job")[2]["state"] == b.status("job")[2]["state"] == "closed"

    asyncio.run(scenario())


def test_many_clients_joining_a_new_session_at_once_all_get_it(cluster):
    a, b = cluster.start(2)

    async def scenario():
        async def join(host):
            async with session_connect(host, "/ws/progress/rush?last_seq=0") as ws:
                return (await recv_json(ws))["epoch"]

        epochs = await asyncio.gather(*(join(a if n % 2 else b) for n in range(30)))
        assert len(set(epochs)) == 1

    asyncio.run(scenario())


def test_a_silent_postgres_is_noticed_and_appends_fail_at_once(cluster, postgres):
    a, b = cluster.start(2)
    assert a.emit("silent", {"type": "step", "n": 1})[1] == [1]
    mark, b_mark = a.log_mark(), b.log_mark()
    postgres.freeze()
    try:
        a.wait_for_log(lambda l: "lost PostgreSQL" in l, timeout=15, since=mark, what="the silence noticed")
        started = time.monotonic()
        status, _, body = a.post_events("silent", {"type": "step", "n": 2})
        assert status == 503 and "unreachable" in body["error"], body
        assert time.monotonic() - started < 1
        # B notices on its own probe; thawing before it has would leave it nothing to reconnect from.
        b.wait_for_log(lambda l: "lost PostgreSQL" in l, timeout=15, since=b_mark, what="B noticing the silence")
    finally:
        postgres.thaw()
    a.wait_for_log(lambda l: "reachable again" in l, timeout=30, since=mark, what="the reconnect")
    # B noticed the silence too and refuses new session clients until it has reconnected.
    b.wait_for_log(lambda l: "reachable again" in l, timeout=30, since=b_mark, what="B's reconnect")
    assert a.emit("silent", {"type": "step", "n": 3})[1] == [2]
    got = asyncio.run(collect(b, "silent", 2))
    assert [m["n"] for m in got] == [1, 3]


def test_a_lua_emit_waiting_for_postgres_holds_up_no_other_client(cluster, postgres):
    """A script's emit waits for the commit like any I/O call: while PostgreSQL is silent the
    script's other clients are still answered, and the emit completes once it answers again."""
    (a,) = cluster.start(1)

    async def scenario():
        async with session_connect(a, "/ctl") as first_ws, session_connect(a, "/ctl") as second_ws:
            first, second = Ctl(first_ws), Ctl(second_ws)
            assert (await first.call({"type": "emit", "session": "held", "n": 1}))["seq"] == 1
            postgres.freeze()
            try:
                pending = asyncio.ensure_future(first.call({"type": "emit", "session": "held", "n": 2}))
                reply = await second.call({"type": "whoami"})
                assert reply["node"] == "node-0"
                assert not pending.done(), "the emit answered while PostgreSQL was frozen"
            finally:
                postgres.thaw()
            assert await pending == {"ok": True, "seq": 2, "id": 2}

    asyncio.run(scenario())
