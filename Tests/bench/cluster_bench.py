"""The cluster's costs, measured beside a single host in the same run (a benchmark, not a test):

  latency  p50/p99 from a POST on host A to a WebSocket client of host B (cluster), beside a POST
           and a client on one host alone (memory) and on one host with --journal (SQLite);
  appends  events per second through POST /sessions/{id}/events with 1, 10 and 100 sessions
           written at once (max(32, S) concurrent writers, writer i on session i % S), in the
           same three set-ups.

Run: python3 Tests/bench/cluster_bench.py BINARY [--events 2000] [--seconds 5]
It starts its own throwaway PostgreSQL (tools/throwaway-postgres.sh) and hosts, prints one JSON line
per measurement, and stops everything.
"""

import argparse
import asyncio
import json
import pathlib
import shutil
import sys
import tempfile
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "Tests" / "acceptance"))

import moongate_process  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

SCRIPT = 'return endpoint { path = "/ws/s/:session", session = { history = 100000, max_bytes = 268435456, resume_wait = 0 } }\n'


async def post(port, session, body):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = body.encode()
    writer.write(
        f"POST /sessions/{session}/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode() + data
    )
    await writer.drain()
    response = await reader.read()
    writer.close()
    status = int(response.split(b" ", 2)[1])
    assert status == 201, response
    return status


async def latency(poster, watcher, events):
    session = "lat-" + uuid.uuid4().hex[:8]
    samples = []
    async with connect(f"ws://127.0.0.1:{watcher}/ws/s/{session}?last_seq=0", max_queue=None) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        for n in range(events):
            sent = time.perf_counter()
            await post(poster, session, json.dumps({"type": "t", "n": n}))
            while True:
                message = json.loads(await ws.recv())
                if message.get("n") == n:
                    samples.append(time.perf_counter() - sent)
                    break
    samples.sort()
    return {"p50_us": round(samples[len(samples) // 2] * 1e6), "p99_us": round(samples[int(len(samples) * 0.99)] * 1e6)}


async def appends(port, sessions, seconds):
    prefix = "app-" + uuid.uuid4().hex[:6]
    writers = max(32, sessions)
    deadline = time.monotonic() + seconds
    counts = [0] * writers

    async def writer(index):
        while time.monotonic() < deadline:
            await post(port, f"{prefix}-{index % sessions}", '{"type":"a"}')
            counts[index] += 1

    await asyncio.gather(*(writer(i) for i in range(writers)))
    return round(sum(counts) / seconds)


def host(running, scripts, *args):
    process = moongate_process.MoongateProcess(scripts, *args)
    running.append(process)
    return process.start()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5)
    options = parser.parse_args()
    moongate_process.MOONGATE = pathlib.Path(options.binary).resolve()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="moongate-cluster-bench-"))
    scripts = folder / "scripts"
    scripts.mkdir()
    (scripts / "s.lua").write_text(SCRIPT)
    postgres = PostgresServer().start()
    running = []
    try:
        alone = host(running, scripts)
        journal = host(running, scripts, "--journal", str(folder / "journal.sqlite"))
        schema = "bench_" + uuid.uuid4().hex[:8]
        a = host(running, scripts, "--cluster", postgres.url, "--cluster-schema", schema, "--node-id", "a")
        b = host(running, scripts, "--cluster", postgres.url, "--cluster-schema", schema, "--node-id", "b")
        setups = {"memory": (alone, alone), "journal": (journal, journal), "cluster A->B": (a, b)}
        for name, (poster, watcher) in setups.items():
            print(json.dumps({"latency": name, **asyncio.run(latency(poster.port, watcher.port, options.events))}), flush=True)
        for sessions in (1, 10, 100):
            for name, (poster, _) in setups.items():
                rate = asyncio.run(appends(poster.port, sessions, options.seconds))
                print(json.dumps({"appends": name, "sessions": sessions, "per_s": rate}), flush=True)
    finally:
        for process in running:
            if process.process is not None:
                process.stop()
        postgres.remove()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
