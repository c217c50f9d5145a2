"""Acceptance tests for the bundled scripts in scripts/, driven by the real `websockets` client.

One `moongate serve` runs for the whole module on a copy of scripts/, so tests may edit its data
files. Each test that edits a file uses its own file and waits until clients have seen the edit,
so the watcher's snapshot always matches the file on disk between tests.

Run: python3 -m pytest -q Tests/acceptance   (MOONGATE_BIN overrides the binary's path)
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("MOONGATE_BIN", REPO / ".build" / "debug" / "moongate"))

DASHBOARDS = {
    "queue": "/api/v1/ws/queue",
    "adw_monitor": "/api/v1/ws/adw-monitor",
    "system_status": "/api/v1/ws/system-status",
    "workflows": "/api/v1/ws/workflows",
    "routes": "/api/v1/ws/routes",
    "workflow_history": "/api/v1/ws/workflow-history",
    "planned_features": "/api/v1/ws/planned-features",
    "webhook_status": "/api/v1/ws/webhook-status",
}
# A watcher polls every 2 s; an edit must reach clients well within this.
UPDATE_TIMEOUT = 5.0
REPLY_TIMEOUT = 3.0


class Server:
    def __init__(self, port, scripts, log):
        self.port = port
        self.scripts = scripts
        self.log = log

    def url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"

    def data_file(self, name):
        return self.scripts / "data" / f"{name}.json"

    def read_data(self, name):
        return json.loads(self.data_file(name).read_text())

    def write_data(self, name, value):
        """Replaces the file atomically, as an editor or exporter should."""
        target = self.data_file(name)
        temporary = target.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(value, indent=2))
        os.replace(temporary, target)

    def log_text(self):
        return self.log.read_text(errors="replace")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_listening(process, port, log, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"moongate exited with {process.returncode} before listening:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"moongate did not listen on port {port} within {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not BINARY.exists():
        pytest.fail(f"no moongate binary at {BINARY}: run `swift build` or set MOONGATE_BIN")
    root = tmp_path_factory.mktemp("moongate")
    scripts = root / "scripts"
    shutil.copytree(REPO / "scripts", scripts)
    log = root / "moongate.log"
    port = free_port()
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(BINARY), "serve", str(scripts), "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_listening(process, port, log)
        yield Server(port, scripts, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"moongate ignored SIGTERM for 10 s:\n{log.read_text()}")
    assert code == 0, f"moongate exited with {code}:\n{log.read_text()}"


def run(coroutine):
    return asyncio.run(coroutine)


async def receive_json(ws, timeout=REPLY_TIMEOUT):
    message = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(message, str), f"expected a text message, got {message!r}"
    return json.loads(message)


async def request(ws, message):
    await ws.send(message if isinstance(message, str) else json.dumps(message))
    return await receive_json(ws)


async def wait_for_update(ws, name, expected, timeout=UPDATE_TIMEOUT):
    """Reads until the `<name>_update` carrying `expected` arrives; fails after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    seen = []
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            message = await receive_json(ws, timeout=max(remaining, 0))
        except TimeoutError:
            pytest.fail(f"no {name}_update with the edited data within {timeout} s; saw {seen}")
        seen.append(message.get("type"))
        if message == {"type": f"{name}_update", "data": expected}:
            return


def wait_for_log(server, *fragments, timeout=UPDATE_TIMEOUT):
    """Waits until one line of the server's log contains every fragment."""
    deadline = time.monotonic() + timeout
    while not any(all(f in line for f in fragments) for line in server.log_text().splitlines()):
        if time.monotonic() > deadline:
            pytest.fail(f"no log line with {fragments} within {timeout} s:\n{server.log_text()}")
        time.sleep(0.05)


# Dashboards ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_sends_its_data_file_on_connect(server, name):
    async def scenario():
        async with connect(server.url(DASHBOARDS[name])) as ws:
            return await receive_json(ws)

    assert run(scenario()) == {"type": f"{name}_update", "data": server.read_data(name)}


def test_sample_data_keeps_empty_arrays_as_arrays(server):
    async def scenario():
        async with connect(server.url(DASHBOARDS["system_status"])) as ws:
            return await receive_json(ws)

    assert run(scenario())["data"]["errors"] == []


def test_edited_data_file_reaches_every_client_and_new_clients(server):
    name = "queue"
    edited = server.read_data(name)
    edited["paused"] = True
    edited["jobs"].append({"id": "job-2000", "issue": 400, "workflow": "adw_patch", "status": "queued"})

    async def scenario():
        async with connect(server.url(DASHBOARDS[name])) as first, connect(server.url(DASHBOARDS[name])) as second:
            await receive_json(first)
            await receive_json(second)
            server.write_data(name, edited)
            await asyncio.gather(wait_for_update(first, name, edited), wait_for_update(second, name, edited))
        async with connect(server.url(DASHBOARDS[name])) as late:
            return await receive_json(late)

    assert run(scenario()) == {"type": f"{name}_update", "data": edited}


def test_silent_client_still_receives_broadcasts(server):
    # A client that never sends a frame (not even its own pings) must stay subscribed.
    name = "webhook_status"
    edited = server.read_data(name)
    edited["stats"]["received_24h"] += 1

    async def scenario():
        async with connect(server.url(DASHBOARDS[name]), ping_interval=None) as ws:
            await receive_json(ws)
            server.write_data(name, edited)
            await wait_for_update(ws, name, edited)

    run(scenario())


def test_half_written_data_file_is_never_sent(server):
    name = "routes"
    edited = server.read_data(name)
    edited["total"] = 10
    edited["routes"].append({"method": "GET", "path": "/api/v1/metrics", "handler": "metrics.get", "auth": True})

    async def scenario():
        async with connect(server.url(DASHBOARDS[name])) as ws:
            await receive_json(ws)
            server.data_file(name).write_text('{"total": 10, "rou')
            await asyncio.to_thread(wait_for_log, server, DASHBOARDS[name], "while polling")
            server.write_data(name, edited)
            # The first message after the broken write must be the complete file.
            assert await receive_json(ws, timeout=UPDATE_TIMEOUT) == {"type": f"{name}_update", "data": edited}

    run(scenario())
    wait_for_log(server, DASHBOARDS[name], "watcher recovered")


# Worker heartbeat ------------------------------------------------------------------------------


def test_heartbeat_protocol(server):
    async def scenario():
        async with connect(server.url("/ws/heartbeat")) as ws:
            assert await request(ws, {"type": "worker_register", "worker_id": "worker-7"}) == {
                "type": "ack",
                "received": True,
                "msg": "registered",
            }
            assert await request(ws, {"type": "heartbeat", "id": 1}) == {"type": "ack", "received": True, "id": 1}
            assert await request(ws, {"type": "job_result", "job_id": "job-1042", "status": "success"}) == {
                "type": "ack",
                "received": True,
                "msg": "recorded",
                "job_id": "job-1042",
            }
            assert await request(ws, {"type": "something_new", "id": "m-9"}) == {
                "type": "ack",
                "received": True,
                "id": "m-9",
            }

    run(scenario())


def test_worker_event_reaches_the_adw_monitor(server):
    event = {"type": "event", "id": 5, "adw_id": "a1b2c3d4", "event": "phase_started", "phase": "test"}

    async def scenario():
        async with connect(server.url(DASHBOARDS["adw_monitor"])) as monitor, connect(server.url("/ws/heartbeat")) as worker:
            assert (await receive_json(monitor))["type"] == "adw_monitor_update"
            await request(worker, {"type": "worker_register", "worker_id": "worker-3"})
            assert await request(worker, event) == {"type": "ack", "received": True, "id": 5}
            return await receive_json(monitor)

    assert run(scenario()) == {"type": "worker_event", "worker": "worker-3", "event": event}


def test_job_results_beyond_the_kept_hundred_are_still_acked(server):
    async def scenario():
        async with connect(server.url("/ws/heartbeat")) as ws:
            for n in range(150):
                reply = await request(ws, {"type": "job_result", "job_id": f"job-{n}", "status": "success"})
                assert reply == {"type": "ack", "received": True, "msg": "recorded", "job_id": f"job-{n}"}

    run(scenario())


def test_malformed_json_gets_an_error_and_the_connection_stays_open(server):
    async def scenario():
        async with connect(server.url("/ws/heartbeat")) as ws:
            reply = await request(ws, '{"type": "heartbeat", "id": ')
            assert reply["type"] == "error"
            assert "invalid JSON" in reply["error"]
            assert await request(ws, {"type": "heartbeat", "id": 2}) == {"type": "ack", "received": True, "id": 2}

    run(scenario())


# Echo, HTTP ------------------------------------------------------------------------------------


def test_echo_returns_text_and_binary_unchanged(server):
    async def scenario():
        async with connect(server.url("/echo")) as ws:
            await ws.send("héllo, moongate")
            assert await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT) == "héllo, moongate"
            await ws.send(b"\x00\x01\xfe\xff")
            assert await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT) == b"\x00\x01\xfe\xff"

    run(scenario())


def test_unknown_path_is_refused_with_404(server):
    async def scenario():
        async with connect(server.url("/api/v1/ws/nothing-here")):
            pass

    with pytest.raises(InvalidStatus) as refused:
        run(scenario())
    assert refused.value.response.status_code == 404


def test_healthz_answers_200(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=REPLY_TIMEOUT) as response:
        assert response.status == 200


# Scripts that reach the outside world (#15) ---------------------------------------------------


def test_the_api_dashboard_streams_the_hosts_own_session_api(server):
    """api_feeds.lua polls GET /sessions/demo on its own host (no --allow-net needed) and sends it
    as demo_session_update: the same session and epoch the HTTP API reports."""
    async def scenario():
        async with connect(server.url("/api/v1/ws/demo-session")) as ws:
            return await receive_json(ws, timeout=UPDATE_TIMEOUT)

    update = run(scenario())
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/sessions/demo", timeout=5) as response:
        status = json.loads(response.read())
    assert update["type"] == "demo_session_update"
    assert update["data"]["session"] == "demo" and update["data"]["epoch"] == status["epoch"]
    assert set(update["data"]) == set(status)


class JobResultsBackend:
    """A real HTTP server for JOB_RESULTS_URL: records each POSTed JSON body, answers 202."""

    def __init__(self):
        import http.server
        import threading

        self.received = []
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                backend.received.append((self.headers.get("Content-Type"), json.loads(body)))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_heartbeat_posts_job_results_to_the_backend_and_acks_its_status(tmp_path):
    """With JOB_RESULTS_URL set, each job_result is POSTed there as JSON and the ack carries the
    backend's status; with the backend gone, the ack says why and the result is still acked."""
    from moongate_process import MoongateProcess

    scripts = tmp_path / "scripts"
    shutil.copytree(REPO / "scripts", scripts)
    backend = JobResultsBackend()
    url = f"http://127.0.0.1:{backend.port}/results"
    host = MoongateProcess(scripts, "--allow-net", f"127.0.0.1:{backend.port}", env={**os.environ, "JOB_RESULTS_URL": url})
    host.start()
    try:
        async def scenario():
            async with connect(host.url("/ws/heartbeat")) as ws:
                await request(ws, {"type": "worker_register", "worker_id": "worker-9"})
                posted = await request(ws, {"type": "job_result", "job_id": "job-1", "status": "success", "id": 1})
                backend.close()
                unreachable = await request(ws, {"type": "job_result", "job_id": "job-2", "status": "failed", "id": 2})
                return posted, unreachable

        posted, unreachable = run(scenario())
    finally:
        assert host.stop() == 0
    assert posted == {"type": "ack", "received": True, "msg": "recorded", "job_id": "job-1", "id": 1, "backend_status": 202}
    assert backend.received == [
        ("application/json", {"worker": "worker-9", "result": {"type": "job_result", "job_id": "job-1", "status": "success", "id": 1}})
    ]
    assert unreachable["received"] is True and unreachable["job_id"] == "job-2"
    assert "backend_status" not in unreachable and unreachable["backend_error"] == "connection refused", unreachable
