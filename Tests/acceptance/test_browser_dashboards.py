"""The eight dashboard feeds of scripts/dashboards.lua in a real browser (Debian's headless
Chromium through chromium-driver), from a page served on another local port.

A host on loopback (the default --host) lets that page in with no --allowed-origin flag. The
page (pages/dashboards.html) holds all eight endpoints open for a minute as passive listeners,
across the 20 s keep-alive pings, and every data-file change reaches each of them within one
poll. The same page is refused by a host listening on 0.0.0.0, and the host says why.
"""

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from moongate_process import REPO, MoongateProcess
from test_browser import browser, console_errors, serve_directory, wait_until  # noqa: F401 (browser is a fixture)
from test_metrics import scrape, value

PAGES = Path(__file__).resolve().parent / "pages"

# As scripts/dashboards.lua declares them: path, message type prefix, data file.
FEEDS = {
    "/api/v1/ws/queue": ("queue", "queue.json"),
    "/api/v1/ws/adw-monitor": ("adw_monitor", "adw_monitor.json"),
    "/api/v1/ws/system-status": ("system_status", "system_status.json"),
    "/api/v1/ws/workflows": ("workflows", "workflows.json"),
    "/api/v1/ws/routes": ("routes", "routes.json"),
    "/api/v1/ws/workflow-history": ("workflow_history", "workflow_history.json"),
    "/api/v1/ws/planned-features": ("planned_features", "planned_features.json"),
    "/api/v1/ws/webhook-status": ("webhook_status", "webhook_status.json"),
}
POLL = 2.0  # the feeds' `watch.every`
MARGIN = 1.5  # on top of one poll: the read, the broadcast and the browser's event loop
HOLD = 60.0  # how long the page listens; the feeds ping every 20 s
SAMPLES = (10.0, 30.0, 50.0)  # halfway between pings: what the page has sent the host so far
ROUNDS = (20.0, 40.0, 55.0)  # when every data file is rewritten


@pytest.fixture
def pages_server():
    """pages/ over HTTP on its own port: the dashboard's own web server, another origin."""
    with serve_directory(PAGES) as url:
        yield url


def feeds(driver):
    return driver.execute_script("return window.dashboards && window.dashboards.feeds")


def counts(driver):
    """Per path: (opened, messages, closes), read in one step without the payloads."""
    return driver.execute_script(
        "const feeds = window.dashboards ? window.dashboards.feeds : {};"
        "return Object.fromEntries(Object.entries(feeds).map(([p, f]) => [p, [f.opened, f.messages.length, f.closes.length]]));"
    )


def all_feeds(driver, predicate):
    state = counts(driver)
    return len(state) == len(FEEDS) and all(predicate(*state[path]) for path in FEEDS)


def rewrite(path, document):
    """Replaces a data file in one step, so a poll never reads it half-written."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(temporary, path)


def bytes_received_by_host(port):
    """Per peer, the bytes the host has read on each established connection to `port` (from
    `ss -i`): a passive page's socket only grows when the browser answers a ping."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", "sport", "=", f":{port}"], check=True, capture_output=True, text=True
    ).stdout
    received = {}
    # Each connection is a line "Recv-Q Send-Q local peer", then a tab-indented line of details.
    for match in re.finditer(r"^\S.*\s(\S+:\d+)[ \t]*\n\s([^\n]*)", out, re.M):
        numbers = re.search(r"\bbytes_received:(\d+)", match.group(2))
        received[match.group(1)] = int(numbers.group(1)) if numbers else 0
    return received


def test_a_page_from_another_local_port_listens_to_all_dashboards_for_a_minute(browser, pages_server, tmp_path):
    scripts = tmp_path / "scripts"
    shutil.copytree(REPO / "scripts", scripts)
    data = scripts / "data"
    expected = {path: [json.loads((data / file).read_text())] for path, (_, file) in FEEDS.items()}
    host = MoongateProcess(scripts).start()  # no --allowed-origin: the default policy must let the page in
    try:
        browser.get(f"{pages_server}/dashboards.html?port={host.port}")
        wait_until(browser, lambda d: all_feeds(d, lambda opened, messages, closes: (opened and messages >= 1) or closes), "8 open feeds with their first message")
        start = time.monotonic()
        state = feeds(browser)
        for path, (name, _) in FEEDS.items():
            feed = state[path]
            assert feed["opened"] and feed["closes"] == [] and feed["errors"] == 0, (path, feed["closes"], host.log_text())
            assert [m["type"] for m in feed["messages"]] == [f"{name}_update"], path
            assert feed["messages"][0]["data"] == expected[path][0], path
        received = [bytes_received_by_host(host.port)]
        assert len(received[0]) == len(FEEDS), received

        milestones = sorted([(t, "sample") for t in SAMPLES] + [(t, "round") for t in ROUNDS])
        for at, what in milestones:
            time.sleep(max(0.0, start + at - time.monotonic()))  # the minute is the test's duration
            if what == "sample":
                received.append(bytes_received_by_host(host.port))
                continue
            written = {}
            for path, (_, file) in FEEDS.items():
                document = dict(expected[path][0], marker={"round": len(expected[path]), "token": uuid.uuid4().hex})
                rewrite(data / file, document)
                written[path] = time.time()
                expected[path].append(document)
            count = len(expected[next(iter(FEEDS))])
            wait_until(browser, lambda d: all_feeds(d, lambda opened, messages, closes: messages >= count or closes), f"the change of round {count - 1} on every feed")
            state = feeds(browser)
            for path in FEEDS:
                feed = state[path]
                assert feed["closes"] == [], (path, feed["closes"])
                assert [m["data"] for m in feed["messages"]] == expected[path], path
                delay = feed["messages"][-1]["at"] / 1000 - written[path]
                assert delay <= POLL + MARGIN, f"{path}: the change of round {count - 1} took {delay:.2f} s"
        time.sleep(max(0.0, start + HOLD - time.monotonic()))

        # Still all open, each with exactly the four values it was sent, and nothing else.
        state = feeds(browser)
        for path, (name, _) in FEEDS.items():
            feed = state[path]
            assert feed["closes"] == [] and feed["errors"] == 0, (path, feed["closes"])
            assert [m["type"] for m in feed["messages"]] == [f"{name}_update"] * (1 + len(ROUNDS)), path
            assert [m["data"] for m in feed["messages"]] == expected[path], path

        # Same 8 connections throughout; the page sent nothing before the first ping, and answered
        # the pings at about 20 s and 40 s (its only traffic: pongs).
        assert all(sample.keys() == received[0].keys() for sample in received), received
        at_open, before_first, after_first, after_second = received
        for peer in at_open:
            assert before_first[peer] == at_open[peer], (peer, received)
            assert after_first[peer] > before_first[peer], (peer, "no pong for the ping at 20 s", received)
            assert after_second[peer] > after_first[peer], (peer, "no pong for the ping at 40 s", received)

        log = host.log_text()
        assert "refused a WebSocket handshake" not in log, log
        assert "did not answer a ping" not in log, log
        samples = scrape(host)
        for path in FEEDS:
            assert value(samples, "moongate_connections", endpoint=path) == 1, path
            assert value(samples, "moongate_missed_pongs_total", endpoint=path) == 0, path
            assert value(samples, "moongate_messages_in_total", endpoint=path) == 0, path
            assert value(samples, "moongate_origin_refusals_total", endpoint=path) == 0, path
        assert sum(value(samples, "moongate_connections", endpoint=path) for path in FEEDS) == 8
        assert console_errors(browser) == []
    finally:
        exit_code = host.stop()
    assert exit_code == 0, host.log_text()
    # Shutdown says goodbye to every listener with 1001.
    wait_until(browser, lambda d: all_feeds(d, lambda opened, messages, closes: closes >= 1), "close from the shutdown on every feed")
    assert {path: [c["code"] for c in feed["closes"]] for path, feed in feeds(browser).items()} == {path: [1001] for path in FEEDS}


def test_a_host_on_all_addresses_refuses_the_same_page_and_says_why(browser, pages_server):
    host = MoongateProcess(REPO / "scripts", "--host", "0.0.0.0").start()
    try:
        mark = host.log_mark()
        browser.get(f"{pages_server}/dashboards.html?port={host.port}")
        wait_until(browser, lambda d: all_feeds(d, lambda opened, messages, closes: closes >= 1), "refusal of every feed")
        for path, feed in feeds(browser).items():
            assert not feed["opened"] and feed["messages"] == [], path
            assert [c["code"] for c in feed["closes"]] == [1006], path
        line = host.wait_for_log(lambda l: "refused a WebSocket handshake" in l, timeout=5, since=mark)
        assert "warning" in line.lower() and pages_server in line and "--allowed-origin" in line, line
        samples = scrape(host)
        for path in FEEDS:
            assert value(samples, "moongate_origin_refusals_total", endpoint=path) == 1, path
            assert value(samples, "moongate_connects_total", endpoint=path) == 0, path
    finally:
        assert host.stop() == 0
