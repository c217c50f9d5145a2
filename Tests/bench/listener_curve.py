#!/usr/bin/env python3
"""Deliveries per second against the number of listeners, for Moongate and a peer, measured the
way ../shared/bench/compare.sh measures: the server pinned to CPU 0, ../shared/wsload on CPU 1,
200-byte broadcasts, one outstanding, 10 s per point after 2 s of warm-up.

  measure: listener_curve.py run NAME 'START COMMAND (the port is appended)' PATH >> curve.jsonl
  plot:    listener_curve.py plot curve.jsonl docs/listeners.png       (needs matplotlib)

Not part of the test run: it takes about a minute per server and wants a quiet machine.
"""

import json
import os
import socket
import subprocess
import sys
import time

LISTENERS = (1000, 2000, 5000, 10000)
WSLOAD = os.environ.get("WSLOAD", os.path.join(os.path.dirname(__file__), "../../../shared/wsload/wsload"))


def wait_for_port(port, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listening on {port} after {timeout} s")


def run(name, start, path):
    port = int(os.environ.get("PORT", "9301"))
    server = subprocess.Popen(
        ["taskset", "-c", "0", "bash", "-c", f"exec {start} {port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        for listeners in LISTENERS:
            out = subprocess.run(
                ["taskset", "-c", "1", WSLOAD, "broadcast", "-c", str(listeners), "-r", "max", "-w", "1",
                 "--size", "200", "-W", "2", "-d", "10", f"ws://127.0.0.1:{port}{path}"],
                capture_output=True, text=True, check=True,
            ).stdout
            figures = json.loads(out.strip().splitlines()[-1])
            print(json.dumps({
                "server": name,
                "listeners": listeners,
                "deliveries_per_s": figures.get("deliveries_per_s"),
                "p99_us": (figures.get("latency_us") or {}).get("p99"),
                "lost": figures.get("lost"),
            }), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


def plot(source, target):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(source) if line.strip()]
    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=120)
    for name in dict.fromkeys(row["server"] for row in rows):
        points = sorted((r["listeners"], r["deliveries_per_s"]) for r in rows if r["server"] == name)
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", linewidth=2, label=name)
    axis.set_xscale("log")
    axis.set_xticks(LISTENERS, [f"{n // 1000}k" for n in LISTENERS])
    axis.set_xlabel("listeners")
    axis.set_ylabel("deliveries / s (one core)")
    axis.set_ylim(bottom=0)
    axis.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
    axis.grid(True, alpha=0.3)
    axis.legend()
    axis.set_title("Broadcast of 200-byte messages, server on one core")
    figure.tight_layout()
    figure.savefig(target)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "run":
        run(*sys.argv[2:5])
    elif len(sys.argv) == 4 and sys.argv[1] == "plot":
        plot(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
