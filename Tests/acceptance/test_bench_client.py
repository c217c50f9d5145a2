"""`moongate bench`, the product's own load client, against the bundled /bench endpoint."""

import json
import subprocess

import pytest

from hostile_support import Host
from moongate_process import MOONGATE, REPO


@pytest.fixture(scope="module")
def host():
    server = Host(REPO / "scripts").start()
    try:
        yield server
    finally:
        assert server.stop() == 0


def bench(*args):
    result = subprocess.run([str(MOONGATE), "bench", *map(str, args)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "mode, extra, unit",
    [("ack", ["-w", "4"], "replies/s"), ("broadcast", [], "deliveries/s"), ("idle", [], "messages/s")],
)
def test_each_mode_measures_real_traffic(host, mode, extra, unit):
    text, report = bench(mode, host.url("/bench"), "-c", 20, "-d", 1, "--warmup", 0.5, *extra)
    assert unit in text
    assert (report["mode"], report["connected"], report["failed"], report["abnormal"]) == (mode, 20 + (mode == "broadcast"), 0, 0)
    if mode != "idle":
        assert report["rate"] > 0 and report["latencyMicroseconds"]["samples"] > 0


def test_resume_mode_reconnects_with_a_replay(host):
    import urllib.request

    events = json.dumps([{"type": "e", "n": n} for n in range(20)]).encode()
    urllib.request.urlopen(urllib.request.Request(host.http_url("/sessions/bench-client/events"), data=events, method="POST"))
    _, report = bench("resume", host.url("/ws/progress/bench-client?last_seq=10"), "-c", 2, "-d", 1, "--expect", 11)
    assert report["rate"] > 0 and report["abnormal"] == 0


def test_remote_targets_are_refused_without_allow_remote():
    result = subprocess.run([str(MOONGATE), "bench", "ack", "ws://192.0.2.1:80/bench"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "not a loopback address" in result.stderr
