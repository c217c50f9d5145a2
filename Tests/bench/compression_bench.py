"""Broadcasts with and without permessage-deflate, alternated: a release `moongate serve` on the
bench script (CPU 0) and `moongate bench broadcast --snapshot` (CPU 1) without compression, with
it, and with a 12-bit window that makes the host compress for each client alone. Each round reports deliveries/s, the server's CPU microseconds per delivery and
the bytes it wrote per delivery (from /proc, inside the measured window), then idle memory per
connection with and without compression.

    python3 Tests/bench/compression_bench.py .build/release/moongate [--rounds 2] [--listeners 1000] [--size 4096]

Not part of the test run.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def written_bytes(pid):
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar")


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Server:
    def __init__(self, binary, scripts):
        self.port = free_port()
        self.process = subprocess.Popen(
            ["taskset", "-c", "0", binary, "serve", scripts, "--port", str(self.port), "--log-level", "warning", "--io-threads", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the server did not listen")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=20)


def broadcast_round(binary, scripts, compression, listeners, size, seconds=12, warmup=2, window=None):
    server = Server(binary, scripts)
    try:
        arguments = ["taskset", "-c", "1", binary, "bench", "broadcast", f"ws://127.0.0.1:{server.port}/bench",
                     "-c", str(listeners), "-d", str(seconds), "--warmup", str(warmup), "--size", str(size), "--snapshot"]
        if compression:
            arguments.append("--compression")
        if window:
            arguments += ["--server-window-bits", str(window)]
        bench = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        # Past connecting and the warm-up, sample the server across the middle of the window.
        time.sleep(warmup + 4)
        cpu0, bytes0, t0 = cpu_seconds(server.process.pid), written_bytes(server.process.pid), time.monotonic()
        time.sleep(seconds - 6)
        cpu1, bytes1, t1 = cpu_seconds(server.process.pid), written_bytes(server.process.pid), time.monotonic()
        output, _ = bench.communicate(timeout=120)
        report = json.loads(output.strip().splitlines()[-1])
        deliveries = report["rate"] * (t1 - t0)
        return {
            "compression": compression if not window else f"window {window}",
            "deliveries_per_s": round(report["rate"]),
            "server_cpu_us_per_delivery": round((cpu1 - cpu0) * 1e6 / deliveries, 2),
            "cpu_share": round((cpu1 - cpu0) / (t1 - t0), 2),
            "bytes_written_per_delivery": round((bytes1 - bytes0) / deliveries),
            "p99_us": round(report["latencyMicroseconds"]["p99"]),
            "abnormal": report["abnormal"],
        }
    finally:
        server.stop()


def idle_round(binary, scripts, compression, connections=5000):
    server = Server(binary, scripts)
    try:
        before = rss_kib(server.process.pid)
        arguments = ["taskset", "-c", "1", binary, "bench", "idle", f"ws://127.0.0.1:{server.port}/bench",
                     "-c", str(connections), "-d", "8"]
        if compression:
            arguments.append("--compression")
        bench = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(6)
        after = rss_kib(server.process.pid)
        bench.communicate(timeout=60)
        return {"compression": compression, "idle_kb_per_conn": round((after - before) / connections, 2)}
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--listeners", type=int, default=1000)
    parser.add_argument("--size", type=int, default=4096)
    options = parser.parse_args()
    scripts = tempfile.mkdtemp()
    shutil.copy(REPO / "scripts" / "bench.lua", scripts)
    try:
        for _ in range(options.rounds):
            for compression in (False, True):
                print(json.dumps(broadcast_round(options.binary, scripts, compression, options.listeners, options.size)), flush=True)
            # A window smaller than 15 bits: every message compressed for each client alone.
            print(json.dumps(broadcast_round(options.binary, scripts, True, options.listeners, options.size, window=12)), flush=True)
        for compression in (False, True):
            print(json.dumps(idle_round(options.binary, scripts, compression)), flush=True)
    finally:
        shutil.rmtree(scripts)


if __name__ == "__main__":
    main()
