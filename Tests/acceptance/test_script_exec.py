"""Scripts that run programs: `exec(program, args, { timeout, stdin })` with real programs
(/bin/cat, /bin/echo, /bin/false, /bin/sleep, /bin/pwd) allowed by `--allow-exec`, over real
WebSocket clients of a real `moongate serve`. Processes are watched with pgrep and /proc.

Run: python3 -m pytest -q Tests/acceptance/test_script_exec.py   (MOONGATE_BIN overrides the binary)
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid

import pytest
from websockets.asyncio.client import connect

from moongate_process import MoongateProcess

SCRIPT = """
endpoint {
  path = "/run",
  on = {
    run = function(conn, msg)
      local result, reason = exec(msg.program, msg.args or {}, { timeout = msg.timeout, stdin = msg.stdin })
      if result == nil then return { type = "failed", reason = reason } end
      return { type = "ran", code = result.code, stdout = result.stdout, stderr = result.stderr,
               signal = result.signal }
    end,
    quick = function(conn, msg) return { type = "quick" } end,
  },
}
"""


@pytest.fixture
def scripts(tmp_path):
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "run.lua").write_text(SCRIPT)
    return folder


def start(scripts, *programs):
    return MoongateProcess(scripts, *(arg for program in programs for arg in ("--allow-exec", program))).start()


async def ask(ws, message, timeout=20):
    await ws.send(json.dumps(message))
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def talk(host, *messages):
    """Sends each message on one connection and returns the replies, in order."""

    async def scenario():
        async with connect(host.url("/run")) as ws:
            return [await ask(ws, message) for message in messages]

    return asyncio.run(scenario())


def run(program, *args):
    return {"type": "run", "program": program, "args": list(args)}


def unique_seconds():
    """A sleep duration no other process on the machine is running with."""
    return f"37.{uuid.uuid4().int % 10**9:09d}"


def sleeping(seconds):
    """The pids of `sleep SECONDS` processes."""
    found = subprocess.run(["pgrep", "-f", f"^/bin/sleep {re.escape(seconds)}$"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def wait_until(condition, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.02)
    return value


def test_cat_gets_stdin_and_echo_gets_its_arguments_literally(scripts):
    """stdin reaches /bin/cat; shell syntax in arguments reaches /bin/echo unexpanded."""
    (scripts / "would-be-globbed.txt").write_text("")
    arguments = ["; id", "$(id)", "`id`", "a  b", "*", "$HOME", "'quoted'", "x > /tmp/out"]
    text = "first line\nsecond: ünïcode\n"
    host = start(scripts, "/bin/cat", "/bin/echo")
    try:
        cat, echo, empty = talk(
            host,
            {**run("/bin/cat"), "stdin": text, "id": 1},
            run("/bin/echo", *arguments),
            run("/bin/cat"),
        )
    finally:
        host.stop()
    assert cat == {"type": "ran", "code": 0, "stdout": text, "stderr": "", "id": 1}
    direct = subprocess.run(["/bin/echo", *arguments], capture_output=True, text=True)
    assert echo["code"] == 0 and echo["stdout"] == direct.stdout == " ".join(arguments) + "\n"
    # No stdin given: the program reads an empty input rather than waiting.
    assert empty["code"] == 0 and empty["stdout"] == ""


def test_exit_codes_and_stderr_come_back(scripts):
    """/bin/false gives code 1; cat of a missing file gives its code and its stderr."""
    host = start(scripts, "/bin/false", "/bin/cat")
    try:
        false, missing = talk(host, run("/bin/false"), run("/bin/cat", "no-such-file"))
    finally:
        host.stop()
    assert false["code"] == subprocess.run(["/bin/false"]).returncode == 1
    direct = subprocess.run(["/bin/cat", "no-such-file"], capture_output=True, text=True, cwd=scripts)
    assert missing["code"] == direct.returncode != 0
    assert missing["stderr"] == direct.stderr and "no-such-file" in missing["stderr"]
    assert missing["stdout"] == "" and "signal" not in missing


def test_a_program_past_its_timeout_is_killed(scripts):
    """sleep past its timeout: nil, "timeout", the process is gone, and metrics count a timeout."""
    seconds = unique_seconds()
    host = start(scripts, "/bin/sleep")
    try:
        timeouts = host.metric("moongate_script_io_calls_total", kind="exec", outcome="timeout")

        async def scenario():
            async with connect(host.url("/run")) as ws:
                await ws.send(json.dumps({**run("/bin/sleep", seconds), "timeout": 1.5, "id": 4}))
                # The program really ran: seen while the call waits.
                pids = await asyncio.to_thread(wait_until, lambda: sleeping(seconds), "the sleep process")
                return pids, json.loads(await asyncio.wait_for(ws.recv(), 20))

        pids, reply = asyncio.run(scenario())
        assert reply == {"type": "failed", "reason": "timeout", "id": 4}
        wait_until(lambda: not sleeping(seconds), "the killed sleep to be gone")
        assert all(not os.path.exists(f"/proc/{pid}") for pid in pids)
        assert host.metric("moongate_script_io_calls_total", kind="exec", outcome="timeout") == timeouts + 1
    finally:
        host.stop()


def test_a_program_that_is_not_allowed_is_refused_with_the_flag_named(scripts):
    """An unlisted program is not run: nil and a reason naming --allow-exec (counted as refused);
    the connection stays."""
    host = start(scripts, "/bin/echo")
    try:
        by_path, by_name, fine = talk(
            host,
            {**run("/bin/cat", "/etc/hostname"), "id": 1},
            {**run("cat"), "id": 2},
            {**run("/bin/echo", "still here"), "id": 3},
        )
        metrics = urllib.request.urlopen(host.http_url("/metrics"), timeout=5).read().decode()
    finally:
        host.stop()
    for refused, request_id in ((by_path, 1), (by_name, 2)):
        assert refused["type"] == "failed" and refused["id"] == request_id, refused
        assert "--allow-exec /absolute/path/to/cat" in refused["reason"], refused
    assert 'moongate_script_io_calls_total{kind="exec",outcome="refused"} 2' in metrics
    assert fine["id"] == 3 and fine["stdout"] == "still here\n"


def test_a_bare_name_runs_the_one_allowed_path_it_names(scripts, tmp_path):
    """`hello` runs the allowed /…/tools/hello (it prints the path it ran as); two candidates refuse."""
    tools, other = tmp_path / "tools", tmp_path / "other"
    for folder in (tools, other):
        folder.mkdir()
        (folder / "hello").write_text('#!/bin/sh\nprintf "%s" "$0"\n')
        (folder / "hello").chmod(0o755)
    host = start(scripts, tools / "hello")
    try:
        bare, = talk(host, run("hello"))
    finally:
        host.stop()
    assert bare["code"] == 0 and bare["stdout"] == str(tools / "hello")
    ambiguous = start(scripts, tools / "hello", other / "hello")
    try:
        refused, by_path = talk(ambiguous, run("hello"), run(str(other / "hello")))
    finally:
        ambiguous.stop()
    assert refused["type"] == "failed" and "--allow-exec" in refused["reason"], refused
    assert by_path["stdout"] == str(other / "hello")


def test_the_working_directory_is_the_scripts_folder(scripts):
    """/bin/pwd run by a script prints the scripts folder, not the host's own directory."""
    host = start(scripts, "/bin/pwd")
    try:
        pwd, = talk(host, run("/bin/pwd"))
    finally:
        host.stop()
    assert pwd["code"] == 0
    assert os.path.realpath(pwd["stdout"].rstrip("\n")) == os.path.realpath(scripts)
    assert os.path.realpath(os.getcwd()) != os.path.realpath(scripts)


def test_a_waiting_exec_holds_neither_other_clients_nor_its_clients_order(scripts):
    """While one client's sleep runs, others are answered; its own next message waits its turn."""
    seconds = unique_seconds()
    host = start(scripts, "/bin/sleep")
    try:

        async def scenario():
            async with connect(host.url("/run")) as waiting:
                await waiting.send(json.dumps({**run("sleep", seconds), "timeout": 60, "id": 1}))
                await waiting.send(json.dumps({"type": "quick", "id": 2}))
                pids = await asyncio.to_thread(wait_until, lambda: sleeping(seconds), "the sleep process")
                others = [await connect(host.url("/run")) for _ in range(10)]
                try:
                    replies = await asyncio.gather(*(ask(ws, {"type": "quick", "id": n}) for n, ws in enumerate(others)))
                finally:
                    for ws in others:
                        await ws.close()
                # The others were answered while the sleep still ran (it ends only when killed below).
                assert sleeping(seconds) == pids
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                got = [json.loads(await asyncio.wait_for(waiting.recv(), 20)) for _ in range(2)]
                return replies, got

        replies, (slept, quick) = asyncio.run(scenario())
    finally:
        host.stop()
    assert replies == [{"type": "quick", "id": n} for n in range(10)]
    assert slept["id"] == 1 and slept["signal"] == signal.SIGKILL and slept["code"] == 128 + signal.SIGKILL
    assert quick == {"type": "quick", "id": 2}


def signal_mask(pid):
    with open(f"/proc/{pid}/status") as status:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in status) if k in ("SigBlk", "SigIgn")}


def test_a_program_ends_on_sigterm_and_the_signal_is_reported(scripts):
    """SIGTERM ends an exec'd sleep as it ends one started here: code 143 and signal 15 come back."""
    direct = subprocess.Popen(["/bin/sleep", unique_seconds()])
    direct.send_signal(signal.SIGTERM)
    assert direct.wait(timeout=10) == -signal.SIGTERM
    seconds = unique_seconds()
    host = start(scripts, "/bin/sleep")
    try:

        async def scenario():
            async with connect(host.url("/run")) as ws:
                await ws.send(json.dumps({**run("/bin/sleep", seconds), "timeout": 60, "id": 5}))
                pid, = await asyncio.to_thread(wait_until, lambda: sleeping(seconds), "the sleep process")
                mask = signal_mask(pid)
                os.kill(pid, signal.SIGTERM)
                try:
                    return json.loads(await asyncio.wait_for(ws.recv(), 10))
                except asyncio.TimeoutError:
                    raise AssertionError(f"sleep survived SIGTERM; its /proc status: {mask}") from None

        reply = asyncio.run(scenario())
        assert reply == {"type": "ran", "code": 128 + signal.SIGTERM, "signal": signal.SIGTERM,
                         "stdout": "", "stderr": "", "id": 5}
    finally:
        for pid in sleeping(seconds):
            os.kill(pid, signal.SIGKILL)
        host.stop()


@pytest.mark.parametrize("make", ["relative", "not executable"])
def test_a_bad_allow_exec_path_refuses_to_start(scripts, tmp_path, make):
    """--allow-exec with a relative path or a non-executable file: the host exits with the flag named."""
    if make == "relative":
        program = "bin/echo"
    else:
        program = tmp_path / "plain.txt"
        program.write_text("not a program\n")
    host = MoongateProcess(scripts, "--allow-exec", program)
    with pytest.raises(AssertionError, match="exited before"):
        host.start(timeout=20)
    assert host.process.wait(timeout=10) != 0
    assert f"--allow-exec {program}" in host.log_text()
