"""`moongate client`: lines in, messages out, and --resume across a server-side close."""

import json
import queue
import subprocess
import threading

from moongate_process import MOONGATE
from session_support import Host

SCRIPT = r"""
return endpoint {
  path = "/ws/s/:session",
  session = {},
  on = { kick = function(conn) conn:close(1012, "kick") end },
}
"""


class ClientProcess:
    def __init__(self, *args):
        self.process = subprocess.Popen(
            [str(MOONGATE), "client", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def send(self, message):
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def until(self, predicate, timeout=10):
        seen = []
        while True:
            message = self.lines.get(timeout=timeout)
            seen.append(message)
            if predicate(message):
                return seen

    def finish(self):
        self.process.stdin.close()
        return self.process.wait(timeout=15), self.process.stderr.read()


def test_lines_are_sent_and_replies_printed_one_per_line(tmp_path):
    (tmp_path / "s.lua").write_text(SCRIPT)
    host = Host(tmp_path).start()
    try:
        client = ClientProcess("--json", host.url("/ws/s/a?last_seq=0"))
        client.send({"type": "hello", "id": 7})
        replies = client.until(lambda m: m.get("type") == "ack")
        assert replies[0]["type"] == "ready"
        assert replies[-1] == {"type": "ack", "received": True, "id": 7}
        code, errors = client.finish()
        assert code == 0, errors
    finally:
        assert host.stop() == 0


def test_resume_reconnects_and_replays_what_was_missed(tmp_path):
    (tmp_path / "s.lua").write_text(SCRIPT)
    host = Host(tmp_path).start()
    try:
        host.emit("job", [{"type": "step", "n": n} for n in range(1, 6)])
        client = ClientProcess("--json", "--resume", host.url("/ws/s/job?last_seq=0"))
        seen = client.until(lambda m: m.get("seq") == 5)
        client.send({"type": "kick"})
        seen += client.until(lambda m: m.get("type") == "ready")  # reconnected, resuming after 5
        host.emit("job", [{"type": "step", "n": n} for n in range(6, 9)])
        seen += client.until(lambda m: m.get("seq") == 8)
        steps = [m["seq"] for m in seen if m.get("type") == "step"]
        assert steps == list(range(1, 9))
        assert sum(1 for m in seen if m.get("type") == "ready") == 2
        code, errors = client.finish()
        assert code == 0
        assert "closed: 1012" in errors and "reconnecting" in errors
    finally:
        assert host.stop() == 0


def test_compression_is_offered_agreed_and_inflated(tmp_path):
    """--compression: the host agrees, the client says so, and large messages both ways (the
    client's compressed, the host's compressed) arrive whole."""
    (tmp_path / "s.lua").write_text(SCRIPT)
    host = Host(tmp_path).start()
    try:
        client = ClientProcess("--json", "--compression", host.url("/ws/s/z?last_seq=0"))
        client.send({"type": "note", "text": "compressible " * 500, "id": 1})
        replies = client.until(lambda m: m.get("type") == "ack")
        assert replies[-1] == {"type": "ack", "received": True, "id": 1}
        code, errors = client.finish()
        assert code == 0 and "(permessage-deflate)" in errors, errors

        plain = ClientProcess("--json", host.url("/ws/s/z?last_seq=0"))
        plain.until(lambda m: m.get("type") == "ready")
        code, errors = plain.finish()
        assert code == 0 and "permessage-deflate" not in errors, errors
    finally:
        assert host.stop() == 0


REFUSING = r"""
endpoint { path = "/bye", on = { bye = function(conn) conn:close(1000, "bye") return false end } }
endpoint { path = "/members", authorize = function(req) return false, 403, "members only: send a token" end }
"""


def test_each_ending_is_one_clear_line(tmp_path):
    (tmp_path / "r.lua").write_text(REFUSING)
    host = Host(tmp_path).start()
    try:
        # The host closes: the close is reported, and nothing of NIO's follows it.
        client = ClientProcess("--json", host.url("/bye"))
        client.send({"type": "bye"})
        code, errors = client.process.wait(timeout=15), client.process.stderr.read()
        assert code == 0, errors
        assert "closed: 1000" in errors and "ERROR" not in errors and "EventLoop" not in errors, errors
        # A refusal says so once, with the host's explanation.
        refused = subprocess.run([str(MOONGATE), "client", host.url("/members")], stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=30)
        assert refused.returncode == 1
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert lines == ["Error: the host refused the connection: HTTP 403 Forbidden: members only: send a token"], lines
        port = host.port
    finally:
        host.stop()
    # Nothing listening: the reason, not NIO's error types.
    gone = subprocess.run([str(MOONGATE), "client", f"ws://127.0.0.1:{port}/bye"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1
    assert gone.stderr.strip() == f"Error: cannot connect to 127.0.0.1:{port}: connection refused", gone.stderr
