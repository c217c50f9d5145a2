"""A throwaway PostgreSQL server for the cluster tests: `tools/throwaway-postgres.sh` starts one
in a temporary folder, as the unprivileged `postgres` user, on a free loopback port; it is stopped
and removed when the tests end. Each test gets a schema of its own (`--cluster-schema`), so the
tests share the server but never each other's tables.
"""

import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "throwaway-postgres.sh"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="moongate-pg-"))
        self.port = free_port()
        self.url = None

    def start(self):
        result = subprocess.run(
            ["bash", str(SCRIPT), "start", str(self.folder), str(self.port)],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, f"PostgreSQL did not start:\n{result.stdout}\n{result.stderr}"
        self.url = result.stdout.strip().splitlines()[-1]
        return self

    def stop(self):
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.folder)], capture_output=True, timeout=60)

    def restart(self):
        """`pg_ctl restart`: every connection is cut, then the server is back."""
        result = subprocess.run(
            ["bash", str(SCRIPT), "restart", str(self.folder)], capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr

    def _processes(self):
        postmaster = (self.folder / "data" / "postmaster.pid").read_text().split()[0]
        children = subprocess.run(["pgrep", "-P", postmaster], capture_output=True, text=True).stdout.split()
        return [postmaster, *children]

    def freeze(self):
        """SIGSTOP to the server and its backends: connections stay open and answer nothing, as
        across a network that drops every packet."""
        subprocess.run(["kill", "-STOP", *self._processes()], check=True)

    def thaw(self):
        subprocess.run(["kill", "-CONT", *self._processes()], check=True)

    def remove(self):
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def socket_dir(self):
        return str(self.folder)

    def psql(self, sql):
        bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        result = subprocess.run(
            [str(bin_dir / "psql"), self.url, "-qtAc", sql], capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


def fresh_schema():
    return "t_" + uuid.uuid4().hex[:12]
