"""Building paho-mqtt clients the same way in every service.

MQTT 5 everywhere. The connection runs in paho's own network thread (``loop_start``), which
reconnects by itself with back-off; callbacks run on that thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from parkgate.settings import MqttSettings
from protocol import CollectorStatus, PayloadError, Topics, decode

logger = logging.getLogger(__name__)


class _ReadBuffer:
    """The broker connection with reads served from a buffer.

    paho reads each packet with three ``recv`` calls (type, length, body): at thousands of
    messages a second those system calls were a fifth of the collector's CPU. This wrapper reads
    up to 64 KiB at once and hands out what paho asks for; ``pending()`` tells paho's loop that
    bytes are waiting here (the hook paho has for TLS sockets, which buffer the same way)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._data):
            data = self._sock.recv(max(size, 65_536))  # BlockingIOError etc. pass to paho as they are
            if len(data) <= size:
                return data
            self._data, self._pos = data, 0
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._data) - self._pos + inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BufferedClient(mqtt.Client):
    """paho's client reading through ``_ReadBuffer``."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        return sock if self._transport == "websockets" else _ReadBuffer(sock)


def make_client(
    settings: MqttSettings,
    client_id: str,
    *,
    will: tuple[str, bytes] | None = None,
    manual_ack: bool = False,
    cls: type[BufferedClient] = BufferedClient,
) -> mqtt.Client:
    """A configured, not yet connected MQTT 5 client. ``will`` is (topic, payload), sent retained."""
    client = cls(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.username:
        client.username_pw_set(settings.username, settings.password())
    if settings.tls_ca:
        client.tls_set(ca_certs=str(settings.tls_ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    if will:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client


def connect_async(client: mqtt.Client, settings: MqttSettings, *, session_expiry_s: int = 0) -> None:
    """Start connecting in the background; paho retries until the broker answers.

    ``session_expiry_s`` > 0 asks the broker to keep the session (subscriptions and queued QoS 1
    messages) that long while the client is away: the collector uses this so nothing sent while
    it restarts is lost.
    """
    props = Properties(PacketTypes.CONNECT)
    if session_expiry_s:
        props.SessionExpiryInterval = session_expiry_s
    client.connect_async(
        settings.host,
        settings.port,
        keepalive=settings.keepalive_s,
        clean_start=session_expiry_s == 0,
        properties=props,
    )
    client.loop_start()


def reason_text(rc: object) -> str:
    """A paho reason code as ``[code:N] text``."""
    value = getattr(rc, "value", rc)
    return f"[code:{value}] {rc}"


def publish_retained_and_wait(client: mqtt.Client, topic: str, payload: bytes, timeout: float = 3.0) -> None:
    """Publish a retained QoS 1 message and wait (bounded) for the broker's acknowledgement."""
    info = client.publish(topic, payload, qos=1, retain=True)
    with contextlib.suppress(RuntimeError, ValueError):
        info.wait_for_publish(timeout)


def wait_collectors_online(
    settings: MqttSettings,
    names: list[str],
    *,
    since: datetime,
    timeout: float,
    alive: Callable[[], None] | None = None,
) -> bool:
    """Wait until every named collector has said "online" (retained status newer than ``since``):
    it then has migrated, synced its lots and subscribed, so no event sent afterwards misses it.
    ``alive`` is called while waiting and may raise to give up early (a child process died).
    False when ``timeout`` passed first."""
    topics = Topics(settings.topic_root)
    online: set[str] = set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(PayloadError):
            status = decode(CollectorStatus, msg.payload)
            if status.state == "online" and status.ts >= since:
                online.add(status.name)

    client = make_client(settings, f"wait-online-{os.getpid()}-{time.monotonic_ns() % 1_000_000}")
    client.on_connect = lambda c, *_a: c.subscribe([(topics.collector_status(n), 1) for n in names])
    client.on_message = on_message
    connect_async(client, settings)
    try:
        deadline = time.monotonic() + timeout
        while not online.issuperset(names):
            if alive:
                alive()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True
    finally:
        client.disconnect()
        client.loop_stop()
