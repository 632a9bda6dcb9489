"""The collector's broker connection, in a child process of its own.

Receiving a QoS 1 message through paho costs about as much interpreter time as storing it. In one
process both wait for the one interpreter lock: the collector stopped near 5,500 events/s with the
second core of a 2-core machine idle. So the MQTT connection lives in a child process
(``python -m cloud.broker_link``): it receives, gathers what arrived into one batch and passes
``Inbound`` tuples to the collector; the collector sends back the packet ids to acknowledge once
its transaction has committed, and what to publish (availability, screens, confirmations to gates).

It is one connection, as before: the broker's ``use_username_as_clientid`` allows one per user, and
the child holds the collector's persistent session (client id ``collector-NAME``), so events sent
while the collector restarts wait in the broker. The child ends when the collector tells it to, or
with the collector (PDEATHSIG, or the end of the socket pair): then without a DISCONNECT, so the
broker publishes the collector's "offline" will. If the child dies on its own the collector starts a
new one; whatever was passed on but not acknowledged comes again from the broker and is stored once
(event ids).

Between the two, pickled tuples behind a 4-byte length over a socket pair (both ends are this
program):

- collector -> link: ``("publish", [(topic, payload, qos), ...])`` (retained), ``("ack", [(mid,
  qos), ...])``, ``("close", [(topic, payload), ...])`` (last words, QoS 1, awaited; then it ends);
- link -> collector: ``("messages", [Inbound, ...])``, ``("subscribed", [refusal, ...])``,
  ``("disconnected", reason)``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from parkgate.broker import die_with_parent
from parkgate.logs import setup_logging
from parkgate.mqtt import BufferedClient, connect_async, make_client, reason_text
from parkgate.settings import MqttSettings

logger = logging.getLogger(__name__)

RESTART_S = 1.0  # before starting a new link after one died
CLOSE_WAIT_S = 3.0  # for the broker to confirm the last words


# A message as received: (topic, payload, mid, qos); ``mid`` None for one handed in directly (no
# broker to acknowledge). A plain tuple: thousands a second cross the socket pair.
Inbound = tuple[str, bytes, int | None, int]


class Channel:
    """Pickled messages behind a 4-byte length over a stream socket; ``send`` is thread-safe,
    ``receive`` is for one thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._sock.sendall(len(data).to_bytes(4, "big") + data)

    def receive(self, timeout: float | None) -> list[tuple[Any, ...]]:
        """Every whole message that has arrived, waiting up to ``timeout`` s (None: for ever) for
        the first; [] when none came. EOFError when the other end is gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            messages = self._whole_messages()
            if messages:
                return messages
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return []
            ready, _w, _x = select.select([self._sock], [], [], left)
            if not ready:
                return []
            while True:  # everything there is now, without waiting
                try:
                    data = self._sock.recv(1 << 20, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if not data:
                    raise EOFError
                self._buffer += data
                if len(data) < 1 << 20:
                    break

    def _whole_messages(self) -> list[tuple[Any, ...]]:
        messages = []
        buffer, pos = self._buffer, 0
        while len(buffer) - pos >= 4:
            size = int.from_bytes(buffer[pos : pos + 4], "big")
            if len(buffer) - pos - 4 < size:
                break
            messages.append(pickle.loads(buffer[pos + 4 : pos + 4 + size]))  # our own child or parent
            pos += 4 + size
        if pos:
            del buffer[:pos]
        return messages

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class _Batcher:
    """Items added from any thread, sent together by one thread: what gathered while the last batch
    was being sent goes in the next, so batches grow with the load and a lone item goes at once."""

    def __init__(self, send: Callable[[list[Any]], None], name: str) -> None:
        self._send = send
        self._items: list[Any] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def add(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)
        self._ready.set()

    def _loop(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            with self._lock:
                items, self._items = self._items, []
            if items:
                try:
                    self._send(items)
                except OSError:  # the other end is gone; its reader says so
                    return


# -- the child ------------------------------------------------------------------------------------


class _LinkClient(BufferedClient):
    """paho with a short path for what the collector receives most: QoS 1 PUBLISH packets without
    properties (gates send none), handed to ``sink`` as they are, without paho's message object,
    property parsing and topic matching (together a quarter of the collector's CPU per event).
    Anything else takes paho's own path."""

    sink: Callable[[str, bytes, int, int], None]

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        header = self._in_packet["command"]
        packet = self._in_packet["packet"]
        if header & 0x06 == 0x02 and self._manual_ack:  # (the link adds no per-topic callbacks)
            try:
                length = int.from_bytes(packet[0:2], "big")
                end = 2 + length
                if len(packet) >= end + 3 and packet[end + 2] == 0:  # packet id, no properties
                    topic = bytes(packet[2:end]).decode()
                    mid = int.from_bytes(packet[end : end + 2], "big")
                    self.sink(topic, bytes(packet[end + 3 :]), mid, 1)
                    return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            except UnicodeDecodeError:
                pass  # paho's path reports it
        return super()._handle_publish()


class _Link:
    """The child's side: one MQTT connection serving the collector over ``channel``."""

    def __init__(self, channel: Channel, setup: dict[str, Any]) -> None:
        self.channel = channel
        self.settings = MqttSettings.model_validate_json(setup["settings"])
        self.filters: list[str] = setup["filters"]
        self.session_expiry_s: int = setup["session_expiry_s"]
        self._forward = _Batcher(lambda items: channel.send(("messages", items)), "forward")
        client = make_client(
            self.settings, setup["client_id"], will=setup["will"], manual_ack=True, cls=_LinkClient
        )
        assert isinstance(client, _LinkClient)
        client.sink = self._sink
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        self._subscription: int | None = None

    def _sink(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        self._forward.add((topic, payload, mid, qos))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._forward.add((msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            logger.error("broker refused connection: %s", reason_text(rc))
            return
        logger.info(
            "connected to broker %s:%d (session %s)",
            self.settings.host, self.settings.port, "resumed" if flags.session_present else "new",
        )  # fmt: skip
        self._subscription = client.subscribe([(f, 1) for f in self.filters])[1]

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, codes: list[Any], _p: Any = None) -> None:
        """Connected for real once the broker confirmed the subscriptions: an event published
        before that would not reach this session."""
        if self._subscription is None or mid != self._subscription:
            return
        refused = []
        for topic, code in zip(self.filters, codes, strict=False):
            if code.is_failure:
                refused.append(f"{topic}: {reason_text(code)}")
                logger.error("broker refused the subscription to %s: %s", topic, reason_text(code))
        self._send(("subscribed", refused))

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self._send(("disconnected", reason_text(rc)))

    def _send(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):
            self.channel.send(message)

    def serve(self) -> None:
        """Carry out the collector's requests until it says close or goes away."""
        connect_async(self.client, self.settings, session_expiry_s=self.session_expiry_s)
        try:
            while True:
                try:
                    messages = self.channel.receive(None)
                except (EOFError, OSError):  # the collector died: no DISCONNECT, so its will goes out
                    logger.error("collector gone; link ends")
                    os._exit(1)
                for message in messages:
                    if message[0] == "publish":
                        for topic, payload, qos in message[1]:
                            self.client.publish(topic, payload, qos=qos, retain=True)
                    elif message[0] == "ack":
                        for mid, qos in message[1]:
                            self.client.ack(mid, qos)
                    elif message[0] == "close":
                        infos = [self.client.publish(t, p, qos=1, retain=True) for t, p in message[1]]
                        deadline = time.monotonic() + CLOSE_WAIT_S
                        for info in infos:
                            with contextlib.suppress(RuntimeError, ValueError):
                                info.wait_for_publish(max(deadline - time.monotonic(), 0.01))
                        return
        finally:
            self.client.disconnect()
            self.client.loop_stop()


def main(fd: int) -> int:
    # The collector says when to end. Ctrl-C in a terminal and systemd's stop reach the whole
    # process group, so they are ignored here: the collector still needs the link to acknowledge
    # its last batch and to publish "offline". Killed with the collector, the connection drops
    # without a DISCONNECT and the broker publishes the "offline" will instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)
    channel = Channel(socket.socket(fileno=fd))
    setup = channel.receive(None)[0][1]
    setup_logging(setup["log_level"], name=setup["log_name"])
    _Link(channel, setup).serve()
    return 0


# -- the collector's side -------------------------------------------------------------------------


class BrokerLink:
    """The collector's handle on its link process. ``receive`` is called by one thread (the
    collector's writer): it reads what arrived straight from the socket pair, so no thread of the
    collector has to wake for each handful of messages, and reports the link's news through
    ``on_subscribed`` and ``on_disconnected`` on that thread. ``publish`` and ``ack`` may be called
    from any thread."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        filters: list[str],
        *,
        session_expiry_s: int,
        will: tuple[str, bytes],
        on_subscribed: Callable[[list[str]], None],
        on_disconnected: Callable[[str], None],
    ) -> None:
        self.client_id = client_id
        self.setup = {
            "settings": settings.model_dump_json(),
            "client_id": client_id,
            "filters": filters,
            "session_expiry_s": session_expiry_s,
            "will": will,
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            "log_name": "collector",
        }
        self.on_subscribed = on_subscribed
        self.on_disconnected = on_disconnected
        self._closing = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None

    def start(self) -> None:
        self._channel = self._spawn()

    def receive(self, timeout: float) -> list[Inbound]:
        """The messages that arrived, waiting up to ``timeout`` s for some. A link that died is
        replaced here (after RESTART_S)."""
        if self._channel is None or self._closing.is_set():
            self._closing.wait(timeout)
            return []
        try:
            messages = self._channel.receive(timeout)
        except (EOFError, OSError):
            self._replace()
            return []
        inbound: list[Inbound] = []
        for message in messages:
            if message[0] == "messages":
                inbound += message[1]
            elif message[0] == "subscribed":
                self.on_subscribed(message[1])
            elif message[0] == "disconnected":
                self.on_disconnected(message[1])
        return inbound

    def publish(self, items: list[tuple[str, bytes, int]]) -> None:
        """Publish these (topic, payload, qos), retained."""
        self._send(("publish", items))

    def ack(self, items: list[tuple[int, int]]) -> None:
        """Acknowledge these (mid, qos) to the broker: their messages are committed."""
        self._send(("ack", items))

    def _send(self, message: tuple[str, list[Any]]) -> None:
        if message[1] and self._channel:
            with contextlib.suppress(OSError):  # the link died: receive() replaces it
                self._channel.send(message)

    def close(self, last: list[tuple[str, bytes]]) -> None:
        """Send ``last`` (QoS 1, confirmed or given up after a few seconds) and end the link."""
        self._closing.set()
        if self._channel:
            with contextlib.suppress(OSError):
                self._channel.send(("close", last))
        if self._proc:
            try:
                self._proc.wait(CLOSE_WAIT_S + 5)
            except subprocess.TimeoutExpired:
                logger.warning("broker link did not end; killing it")
                self._proc.kill()
                self._proc.wait()
        if self._channel:
            self._channel.close()

    def _spawn(self) -> Channel:
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            # the client id only names the process for ps
            [sys.executable, "-m", "cloud.broker_link", str(theirs.fileno()), self.client_id],
            pass_fds=[theirs.fileno()],  # the child asks for PDEATHSIG itself (main)
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        theirs.close()
        channel = Channel(ours)
        channel.send(("setup", self.setup))
        return channel

    def _replace(self) -> None:
        self.on_disconnected("broker link ended")
        if self._channel:
            self._channel.close()
        code = self._proc.wait() if self._proc else None
        if self._closing.is_set():
            return
        logger.error("broker link process ended (exit %s); starting a new one in %.0f s", code, RESTART_S)
        self._closing.wait(RESTART_S)
        if not self._closing.is_set():
            self._channel = self._spawn()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
