"""The web console and moongate.js in a real browser: Debian's headless Chromium, driven by
Selenium through chromium-driver.

The console must update live (connections, rates, sessions, reloads, script errors) over its own
WebSocket; the example page (docs/progress.html) must follow a session with moongate.js, match
acks to its requests, and after the host is killed and restarted reconnect and resume with no
event lost or repeated. With MOONGATE_SCREENSHOT=path the console test also saves a screenshot
(how docs/console.png was made).
"""

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from websockets.sync.client import connect

from moongate_process import REPO, MoongateProcess

DOCS = REPO / "docs"
WAIT = 20


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "needs Debian's chromium and chromium-driver (Tests/run-all.sh installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager try the network
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


@contextlib.contextmanager
def serve_directory(directory):
    """`directory` over HTTP on its own 127.0.0.1 port; yields the base URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def page_server():
    """docs/ over HTTP on its own port: a page from another origin, as an app would serve it."""
    with serve_directory(DOCS) as url:
        yield url


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def wait_until(driver, condition, what, timeout=WAIT):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))
    except TimeoutException:
        raise AssertionError(f"no {what} within {timeout} s; browser log: {console_errors(driver, 'ALL')}")


def console_errors(driver, level="SEVERE"):
    """The browser's console messages; refused connections while a host is down are expected."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if (level == "ALL" or entry["level"] == level) and "ERR_CONNECTION_REFUSED" not in entry["message"]
    ]


def cell(driver, table, key, value, css):
    """A cell's text, read in one step in the page: the console rebuilds its tables every second."""
    return driver.execute_script(
        "const row = [...document.querySelectorAll(`#${arguments[0]} tbody tr`)]"
        "  .find((r) => r.dataset[arguments[1]] === arguments[2]);"
        "const cell = row && row.querySelector(arguments[3]);"
        "return cell ? cell.textContent : null;",
        table, key, value, css,
    )


def post_event(host, session, event):
    request = urllib.request.Request(
        host.http_url(f"/sessions/{session}/events"), data=json.dumps(event).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_console_updates_live_over_its_websocket(browser, tmp_path):
    scripts = tmp_path / "scripts"
    shutil.copytree(REPO / "scripts", scripts)
    host = MoongateProcess(scripts).start()
    try:
        browser.get(host.http_url("/console"))
        wait_until(browser, lambda d: d.find_element(By.ID, "status-text").text == "live", "live status")
        wait_until(browser, lambda d: cell(d, "endpoints", "path", "/echo", ".conns") == "0", "the /echo row")
        assert cell(browser, "endpoints", "path", "/ws/progress/:session", ".conns") == "0"

        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(connect(host.url("/echo"))) for _ in range(3)]
            wait_until(browser, lambda d: cell(d, "endpoints", "path", "/echo", ".conns") == "3", "3 connections on /echo")
            assert browser.find_element(By.ID, "connections").text == "3"

            # Traffic shows as a rate while it flows.
            stop = threading.Event()

            def chatter():
                while not stop.is_set():
                    clients[0].send("ping")
                    clients[0].recv(timeout=5)

            sender = threading.Thread(target=chatter, daemon=True)
            sender.start()
            try:
                wait_until(browser, lambda d: float((cell(d, "endpoints", "path", "/echo", ".rate-in") or "0").replace(",", "")) > 0, "a message rate on /echo")
            finally:
                stop.set()
                sender.join(timeout=10)
        wait_until(browser, lambda d: cell(d, "endpoints", "path", "/echo", ".conns") == "0", "the closed connections to go")

        post_event(host, "console-check", {"type": "step", "n": 1})
        post_event(host, "console-check", {"type": "step", "n": 2})
        wait_until(browser, lambda d: cell(d, "sessions", "session", "console-check", ".seq") == "1 … 2", "the session and its seq range")

        # A broken script: the reload fails with file and line, and the console lists it.
        (scripts / "echo.lua").write_text("return endpoint {\n  path = '/echo',\n  on_text = function(conn, t) return t end\n")
        host.process.send_signal(signal.SIGHUP)
        wait_until(browser, lambda d: "echo.lua:4" in d.find_element(By.ID, "reloads").text, "the failed reload with its line")
        assert "failed" in browser.find_element(By.ID, "reloads").text

        # A handler that raises: the console counts it and names the line.
        (scripts / "boom.lua").write_text(
            "return endpoint {\n  path = '/boom',\n  on = { go = function() error('kaboom') end },\n}\n"
        )
        (scripts / "echo.lua").write_text((REPO / "scripts" / "echo.lua").read_text())
        mark = host.log_mark()
        host.process.send_signal(signal.SIGHUP)
        host.wait_for_log(lambda l: "reloaded scripts" in l, timeout=WAIT, since=mark, what="the reload")
        with connect(host.url("/boom")) as boom:
            boom.send('{"type":"go","id":7}')
            assert json.loads(boom.recv(timeout=10)) == {"type": "error", "error": "handler failed", "id": 7}
        wait_until(browser, lambda d: "boom.lua:3" in d.find_element(By.ID, "errors").text, "the script error with its line")
        assert "kaboom" in browser.find_element(By.ID, "errors").text
        assert browser.find_element(By.ID, "error-count").text == "1"
        wait_until(browser, lambda d: cell(d, "endpoints", "path", "/boom", ".conns") == "0", "the new endpoint")

        if os.environ.get("MOONGATE_SCREENSHOT"):
            browser.save_screenshot(os.environ["MOONGATE_SCREENSHOT"])
        assert console_errors(browser) == []
    finally:
        host.stop()


def test_console_is_not_shown_off_the_admin_listener_when_there_is_one(browser, tmp_path):
    host = MoongateProcess(REPO / "scripts", "--admin-port", "0").start()
    try:
        line = host.wait_for_log(lambda l: "admin listening on" in l, timeout=WAIT)
        admin = int(re.search(r"admin listening on http://127\.0\.0\.1:(\d+)", line).group(1))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(host.http_url("/console"), timeout=10)
        assert refused.value.code == 404
        browser.get(f"http://127.0.0.1:{admin}/console")
        wait_until(browser, lambda d: d.find_element(By.ID, "status-text").text == "live", "live status on the admin listener")
        wait_until(browser, lambda d: cell(d, "endpoints", "path", "/echo", ".conns") == "0", "the endpoints")
    finally:
        host.stop()


def kill_host_side(port):
    """Destroys the host's end of every established connection on `port` (the host stays up):
    the peer sees the connection drop without a closing handshake, as when a proxy kills it."""
    subprocess.run(["ss", "-K", "-t", "state", "established", "sport", "=", f":{port}"], check=True, capture_output=True)


def test_example_page_reconnects_and_resumes_with_no_event_lost(browser, page_server, tmp_path):
    journal = tmp_path / "journal.sqlite"
    args = ("--journal", journal, "--allowed-origin", page_server)
    host = MoongateProcess(REPO / "scripts", *args).start()
    port = host.port
    session = f"browser-{os.getpid()}"
    received = lambda d: d.execute_script("return window.received")
    try:
        browser.get(f"{page_server}/progress.html?host=127.0.0.1:{port}&session={session}")
        wait_until(browser, lambda d: d.find_element(By.ID, "status").text == "live", "the page to connect")
        for n in range(1, 6):
            assert post_event(host, session, {"type": "step", "n": n})["seqs"] == [n]
        wait_until(browser, lambda d: received(d) == [1, 2, 3, 4, 5], "events 1-5 on the page")

        # send() resolves with the ack that carries its id.
        reply = browser.execute_async_script(
            "const done = arguments[0]; window.client.send({type: 'note'}).then(done, (e) => done(String(e)));"
        )
        assert reply == {"type": "ack", "received": True, "id": 1}

        # The host's side of the connection is killed. The page's first retry comes after at
        # least 750 ms, so the events published now are missed live and must come by resuming.
        browser.execute_script("window.client.options.initialDelay = 1500;")
        kill_host_side(port)
        wait_until(browser, lambda d: d.find_element(By.ID, "status").text.startswith("reconnecting"), "the page to notice")
        for n in range(6, 9):
            assert post_event(host, session, {"type": "step", "n": n})["seqs"] == [n]
        wait_until(browser, lambda d: d.find_element(By.ID, "status").text == "live", "the page to reconnect")
        for n in range(9, 11):
            assert post_event(host, session, {"type": "step", "n": n})["seqs"] == [n]
        wait_until(browser, lambda d: received(d) == list(range(1, 11)), "events 1-10, each once")
        assert browser.execute_script("return window.reconnects") == 1
        metrics = urllib.request.urlopen(host.http_url("/metrics"), timeout=10).read().decode()
        assert re.search(r'moongate_resumes_total\{endpoint="/ws/progress/:session"\} 1\b', metrics), metrics

        # Now the whole host dies; a new one on the same journal and port takes over.
        host.process.send_signal(signal.SIGKILL)
        host.process.wait(timeout=10)
        wait_until(browser, lambda d: d.find_element(By.ID, "status").text.startswith("reconnecting"), "the page to notice")
        host = MoongateProcess(REPO / "scripts", *args, port=port).start()
        for n in range(11, 16):
            assert post_event(host, session, {"type": "step", "n": n})["seqs"] == [n]
        wait_until(browser, lambda d: received(d) == list(range(1, 16)), "events 1-15, each once", timeout=40)
        assert browser.execute_script("return window.reconnects") == 2
        assert browser.execute_script("return window.resets") == 0
        assert browser.execute_script("return window.client.lastSeq") == 15
        assert console_errors(browser) == []
    finally:
        if host.alive():
            host.stop()
