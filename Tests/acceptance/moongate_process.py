"""A `moongate serve` process for the acceptance tests: started on a folder of scripts with
`--port 0`, its port read from the `listening on` log line, its stderr collected by a thread.

Every wait here is bounded and waits on something observable (a log line, the process state).
"""

import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MOONGATE = Path(os.environ.get("MOONGATE_BIN", REPO / ".build" / "debug" / "moongate"))
LISTENING = re.compile(r"listening on wss?://[^\s:]+:(\d+)")


class MoongateProcess:
    """One `moongate serve` process. Its stderr is read by a thread into `lines`."""

    def __init__(self, scripts, *args, env=None, port=0):
        self.scripts = Path(scripts)
        self.requested_port = port
        self.args = [str(a) for a in args]
        self.env = env
        self.lines = []
        self.changed = threading.Condition()
        self.port = None
        self.process = None

    def start(self, timeout=30.0):
        if not MOONGATE.exists():
            raise RuntimeError(f"no moongate binary at {MOONGATE}: run `swift build` or set MOONGATE_BIN")
        self.process = subprocess.Popen(
            [str(MOONGATE), "serve", str(self.scripts), "--port", str(self.requested_port), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        line = self.wait_for_log(lambda l: LISTENING.search(l), timeout=timeout, what="the listening line")
        self.port = int(LISTENING.search(line).group(1))
        return self

    def _read_log(self):
        for raw in self.process.stderr:
            with self.changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.lines.append("<stderr closed>")
            self.changed.notify_all()

    @property
    def pid(self):
        return self.process.pid

    def alive(self):
        return self.process.poll() is None

    def log_text(self, since=0):
        with self.changed:
            return "\n".join(self.lines[since:])

    def lines_since(self, mark):
        with self.changed:
            return list(self.lines[mark:])

    def log_mark(self):
        with self.changed:
            return len(self.lines)

    def wait_for_log(self, predicate, timeout, what="a log line", since=0):
        """Returns the first line (at or after index `since`) matching `predicate`."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines[since:]:
                    if predicate(line):
                        return line
                if self.lines and self.lines[-1] == "<stderr closed>":
                    raise AssertionError(f"moongate exited before {what}:\n" + "\n".join(self.lines))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {what} within {timeout} s:\n" + "\n".join(self.lines[-60:]))
                self.changed.wait(remaining)

    def url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"

    def http_url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def metric(self, name, **labels):
        """One sample of GET /metrics, by name and exact labels (0 when absent)."""
        with urllib.request.urlopen(self.http_url("/metrics"), timeout=10) as response:
            text = response.read().decode()
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        for line in text.splitlines():
            match = re.match(r"^(\w+)\{(.*)\} (\S+)$", line)
            if match and match.group(1) == name and ",".join(sorted(match.group(2).split(","))) == wanted:
                return float(match.group(3))
        return 0.0

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/<pid>/status")

    def open_fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def terminate(self, timeout=10.0):
        """Teardown once a test has judged the host: SIGTERM, and a kill if it is wedged."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout=15.0):
        """SIGTERM, then the exit code (killing the process if it ignores the signal)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"moongate ignored SIGTERM for {timeout} s:\n" + self.log_text())
