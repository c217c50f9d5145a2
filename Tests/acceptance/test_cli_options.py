"""First-day edges (issue #26): a pid file that names exactly this host, a missing scripts folder
named as such, session epochs of one fixed length, and a reload that changes nothing sending nothing."""

import json
import os
import re
import signal
import subprocess
import urllib.request

from websockets.sync.client import connect

from moongate_process import MOONGATE, MoongateProcess

ECHO = 'return endpoint { path = "/echo", on_text = function(conn, text) return text end }\n'


def test_the_pid_file_names_this_host_and_goes_when_it_stops(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "echo.lua").write_text(ECHO)
    pid_file = tmp_path / "run" / "moongate.pid"
    pid_file.parent.mkdir()
    host = MoongateProcess(scripts, "--pid-file", pid_file).start()
    try:
        # Written before the host listens, which start() waited for.
        assert pid_file.read_text() == f"{host.pid}\n"
        mark = host.log_mark()
        os.kill(int(pid_file.read_text()), signal.SIGHUP)
        host.wait_for_log(lambda line: "SIGHUP: reloading scripts" in line, timeout=10, since=mark)
        assert host.alive()
    finally:
        assert host.stop() == 0
    assert not pid_file.exists()


def test_a_second_host_does_not_take_or_remove_a_running_hosts_pid_file(tmp_path):
    (tmp_path / "echo.lua").write_text(ECHO)
    pid_file = tmp_path / "moongate.pid"
    host = MoongateProcess(tmp_path, "--pid-file", pid_file).start()
    try:
        second = subprocess.run(
            [str(MOONGATE), "serve", str(tmp_path), "--port", "0", "--pid-file", str(pid_file)],
            capture_output=True, text=True, timeout=60,
        )
        assert second.returncode == 1, second.stderr[-2000:]
        assert f"process {host.pid}, named there, is running" in second.stderr, second.stderr[-2000:]
        assert pid_file.read_text() == f"{host.pid}\n"
    finally:
        assert host.stop() == 0
    assert not pid_file.exists()


def test_a_pid_file_that_cannot_be_written_stops_the_host(tmp_path):
    (tmp_path / "echo.lua").write_text(ECHO)
    result = subprocess.run(
        [str(MOONGATE), "serve", str(tmp_path), "--port", "0", "--pid-file", str(tmp_path / "no" / "such" / "x.pid")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "--pid-file" in result.stderr and "cannot write it" in result.stderr, result.stderr[-2000:]


def test_a_missing_scripts_folder_is_named_as_such(tmp_path):
    missing = tmp_path / "no-scripts-here"
    for command in (["check", str(missing)], ["serve", str(missing), "--port", "0"]):
        result = subprocess.run([str(MOONGATE), *command], capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
        assert f"{missing}: no such folder" in result.stderr, result.stderr
        assert "NSCocoaErrorDomain" not in result.stderr


def test_session_epochs_are_32_hex_digits(tmp_path):
    (tmp_path / "s.lua").write_text('return endpoint { path = "/ws/s/:session", session = {} }\n')
    host = MoongateProcess(tmp_path).start()
    try:
        epochs = set()
        for index in range(40):
            request = urllib.request.Request(
                host.http_url(f"/sessions/e{index}/events"), data=b'{"type":"x"}', method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                epochs.add(json.loads(response.read())["epoch"])
        assert len(epochs) == 40
        assert all(re.fullmatch(r"[0-9a-f]{32}", epoch) for epoch in epochs), epochs
    finally:
        host.stop()


WATCH_LUA = r"""
return endpoint {
  path = "/w",
  watch = { every = 0.05, poll = function() log.info("polled") return read_json("data.json") end },
}
"""


def test_a_reload_that_changes_nothing_sends_watchers_clients_nothing(tmp_path):
    # Thirty keys: a new Lua state encodes them in another order with near certainty.
    value = {f"key{index}": index for index in range(30)}
    (tmp_path / "data.json").write_text(json.dumps(value))
    (tmp_path / "w.lua").write_text(WATCH_LUA)
    host = MoongateProcess(tmp_path).start()
    try:
        with connect(host.url("/w")) as client:
            assert json.loads(client.recv(timeout=10)) == value
            mark = host.log_mark()
            os.kill(host.pid, signal.SIGHUP)
            reloaded = host.wait_for_log(lambda line: "reloaded scripts" in line, timeout=10, since=mark)
            # The new state's watcher has polled the unchanged file (twice, to be sure it compared).
            after = host.lines.index(reloaded)
            host.wait_for_log(lambda line: "polled" in line, timeout=10, since=after + 1)
            polled = host.log_mark()
            host.wait_for_log(lambda line: "polled" in line, timeout=10, since=polled)
            changed = {**value, "new": True}
            (tmp_path / "data.json").write_text(json.dumps(changed))
            # The first message after the reload is the real change, not the old value reordered.
            assert json.loads(client.recv(timeout=10)) == changed
    finally:
        host.stop()
