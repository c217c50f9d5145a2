"""--journal: a restart of the host, clean or a crash, loses no buffered event, and resumes
after it see the same epoch and seqs."""

import asyncio
import signal

from session_support import Host, read_events, session_connect

SCRIPT = r"""
return endpoint { path = "/ws/progress/:session", session = { history = 10000 } }
"""


def start(scripts, journal):
    return Host(scripts, "--journal", journal).start()


def test_restarts_mid_stream_lose_nothing(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "progress.lua").write_text(SCRIPT)
    journal = tmp_path / "sessions.sqlite"

    host = start(scripts, journal)
    try:
        epoch, seqs = host.emit("job", [{"type": "step", "n": n} for n in range(1, 301)])
        assert seqs == list(range(1, 301))

        async def watch_until(through):
            async with session_connect(host, "/ws/progress/job?last_seq=0") as ws:
                return await read_events(ws, through)

        assert [m["seq"] for m in asyncio.run(watch_until(300)) if "seq" in m and m["type"] == "step"][-1] == 300
    finally:
        assert host.stop() == 0  # SIGTERM: the journal is flushed

    # A clean restart: same epoch, same seqs, and the stream goes on from 301.
    host = start(scripts, journal)
    try:
        assert host.status("job")[2]["epoch"] == epoch
        more_epoch, more = host.emit("job", [{"type": "step", "n": n} for n in range(301, 401)])
        assert (more_epoch, more[0], more[-1]) == (epoch, 301, 400)
    finally:
        # A crash: every POST that was answered is durable.
        host.process.send_signal(signal.SIGKILL)
        host.process.wait(timeout=10)

    host = start(scripts, journal)
    try:
        async def resume_from(last_seq, through):
            async with session_connect(host, f"/ws/progress/job?last_seq={last_seq}&epoch={epoch}") as ws:
                return await read_events(ws, through)

        messages = asyncio.run(resume_from(250, 400))
        assert messages[0]["type"] == "ready" and messages[0]["epoch"] == epoch
        assert [m for m in messages if m["type"] == "reset"] == []
        steps = [m for m in messages if m["type"] == "step"]
        assert [m["seq"] for m in steps] == list(range(251, 401))
        assert [m["n"] for m in steps] == list(range(251, 401))
    finally:
        assert host.stop() == 0
