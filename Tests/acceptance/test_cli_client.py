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
