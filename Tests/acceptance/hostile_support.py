"""Helpers for test_hostile.py: a moongate process with its log, and a raw WebSocket client that
can send frames no library would (bad bits, bad lengths, unmasked, truncated).

Every wait here is bounded and waits on something observable: a log line, a socket read, the
process state. Nothing sleeps to synchronise.
"""

import base64
import os
import socket
import struct
import time

from moongate_process import MoongateProcess


# WebSocket opcodes (RFC 6455 section 5.2).
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


Host = MoongateProcess


# Raw frames --------------------------------------------------------------------------------------


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None, key=None):
    """One client frame. `rsv` is the 3 RSV bits (4 = RSV1); `length` overrides the declared
    payload length; `key` the 4-byte mask key (random if None)."""
    if isinstance(payload, str):
        payload = payload.encode()
    first = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    declared = len(payload) if length is None else length
    mask_bit = 0x80 if mask else 0
    if declared < 126:
        header = struct.pack("!BB", first, mask_bit | declared)
    elif declared < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, declared)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, declared)
    if not mask:
        return header + payload
    key = os.urandom(4) if key is None else key
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


def handshake_request(path, port, key=None, extra=(), omit=()):
    key = base64.b64encode(os.urandom(16)).decode() if key is None else key
    headers = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
    }
    lines = [f"GET {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name not in omit]
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawClient:
    """A blocking socket with a read buffer; every read has a deadline."""

    def __init__(self, port, rcvbuf=None, timeout=5.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect, so the advertised window (and its scaling) reflect it.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("raw read timed out")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buffer += chunk

    def read_http_head(self, timeout=5.0):
        """Returns (status, head text) of an HTTP response; leaves what follows in the buffer."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            self._fill(deadline)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        text = head.decode("latin-1")
        return int(text.split(" ", 2)[1]), text

    def upgrade(self, path, port, timeout=5.0):
        self.send(handshake_request(path, port))
        status, head = self.read_http_head(timeout)
        if status != 101:
            raise AssertionError(f"upgrade to {path} answered {status}:\n{head}")
        return self

    def read_frame(self, timeout=5.0):
        """Returns (fin, rsv, opcode, payload) of the next server frame."""
        deadline = time.monotonic() + timeout
        while len(self.buffer) < 2:
            self._fill(deadline)
        first, second = self.buffer[0], self.buffer[1]
        if second & 0x80:
            raise AssertionError("the server sent a masked frame")
        length, offset = second & 0x7F, 2
        if length == 126:
            while len(self.buffer) < 4:
                self._fill(deadline)
            length, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif length == 127:
            while len(self.buffer) < 10:
                self._fill(deadline)
            length, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
        while len(self.buffer) < offset + length:
            self._fill(deadline)
        payload = self.buffer[offset : offset + length]
        self.buffer = self.buffer[offset + length :]
        return bool(first & 0x80), (first >> 4) & 7, first & 0xF, payload

    def read_close(self, timeout=5.0):
        """Skips data frames until a close frame; returns (code or None, reason bytes, skipped)."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            _, _, opcode, payload = self.read_frame(max(deadline - time.monotonic(), 0.001))
            if opcode == CLOSE:
                if len(payload) >= 2:
                    return struct.unpack("!H", payload[:2])[0], payload[2:], skipped
                return None, payload, skipped
            skipped.append((opcode, payload))

    def wait_closed(self, timeout=5.0):
        """True once the server closed the TCP connection (EOF or reset), reading anything left."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except (TimeoutError, socket.timeout):
                return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
