"""A load generator's MQTT publisher: QoS 1 PUBLISH packets written straight to a socket.

Benchmarks run the broker, the collectors and the load on the same two cores. A paho client
spends about as much CPU to send an event as the collector spends to store it, so a paho load
generator halves what the collector can be shown to do. This writes MQTT 3.1.1 packets that were
encoded beforehand, many per ``send``, keeps up to ``window`` of them unacknowledged and counts
the broker's PUBACKs: each event is still its own QoS 1 PUBLISH on its gate's topic, taken and
acknowledged by the real broker, at a few microseconds of load-generator CPU.

Only for benchmarks: it does not reconnect, resend, or speak MQTT 5.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PUBACK = 0x40
CONNACK = 0x20
CHUNK = 256  # packets per send


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, keepalive_s: int = 600) -> bytes:
    body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive_s) + _utf8(client_id)
    return bytes([0x10]) + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """A QoS 1 PUBLISH (not retained)."""
    body = _utf8(topic) + struct.pack("!H", packet_id) + payload
    return bytes([0x32]) + _varint(len(body)) + body


@dataclass
class BlastResult:
    sent: int
    acked: int
    seconds: float
    sent_at: list[float]  # time.time() at which each message was handed to the socket


class Blaster:
    """One connection. ``send(messages)`` publishes (topic, payload) pairs and returns when the
    broker acknowledged all of them."""

    def __init__(self, host: str, port: int, client_id: str, *, window: int = 20_000) -> None:
        if not 0 < window < 65_535:
            raise ValueError("window must be between 1 and 65,534 (16-bit packet ids)")
        self.window = window
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(client_id))
        ack = self._recv_exact(4)
        if ack[0] != CONNACK or ack[3] != 0:
            raise ConnectionError(f"broker refused the connection (CONNACK {ack.hex()})")
        self._buffer = b""
        self._next_id = 0
        self.sent = 0
        self.acked = 0

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def _read_acks(self, block: bool) -> int:
        """Count the PUBACKs that arrived (waiting for at least one if ``block``)."""
        self.sock.setblocking(block)
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return 0
        finally:
            self.sock.setblocking(True)
        if not data:
            raise ConnectionError("broker closed the connection")
        data = self._buffer + data
        whole = len(data) // 4 * 4
        self._buffer = data[whole:]
        if any(b != PUBACK for b in data[0:whole:4]):
            raise ConnectionError("unexpected packet from the broker (only PUBACKs expected)")
        return whole // 4

    def submit(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Send ``messages`` (one ``send`` call), first waiting while more than ``window`` would be
        unacknowledged. Returns without waiting for their acknowledgements (see :meth:`drain`)."""
        while self.sent - self.acked + len(messages) > self.window and self.sent > self.acked:
            self.acked += self._read_acks(block=True)
        packets = []
        for topic, payload in messages:
            self._next_id = self._next_id % 65_535 + 1
            packets.append(publish_packet(topic, payload, self._next_id))
        self.sock.sendall(b"".join(packets))
        self.sent += len(messages)
        self.acked += self._read_acks(block=False)

    def drain(self) -> None:
        """Wait until the broker acknowledged everything sent."""
        while self.acked < self.sent:
            self.acked += self._read_acks(block=True)

    def send(
        self,
        messages: Sequence[tuple[str, bytes]],
        *,
        rate: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> BlastResult:
        """Publish ``messages`` in order, at ``rate`` messages/s or as fast as the broker takes them,
        and wait for every acknowledgement."""
        started_mono, started = time.monotonic(), time.time()
        sent_at: list[float] = []
        i = 0
        while i < len(messages):
            n = min(CHUNK, len(messages) - i)
            if rate:
                due = int((time.monotonic() - started_mono) * rate) + 1
                if due <= i:
                    time.sleep(min((i + 1 - due) / rate, 0.005))
                    continue
                n = min(n, due - i)
            self.submit(messages[i : i + n])
            sent_at.extend([time.time()] * n)
            i += n
            if progress:
                progress(i)
        self.drain()
        return BlastResult(i, self.acked, time.time() - started, sent_at)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(bytes([0xE0, 0]))  # DISCONNECT
        self.sock.close()
