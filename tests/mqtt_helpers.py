"""Small MQTT helpers for tests: read a retained message, publish raw bytes."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt

from parkgate.mqtt import make_client
from parkgate.settings import MqttSettings


def retained(settings: MqttSettings, topic: str, timeout: float = 5.0) -> bytes | None:
    """The retained payload on ``topic`` (None if none arrives within ``timeout``)."""
    got: list[bytes] = []
    done = threading.Event()
    client = make_client(settings, f"test-{uuid.uuid4().hex[:8]}")

    def on_connect(c: mqtt.Client, *_a: object) -> None:
        c.subscribe(topic, qos=1)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.payload)
        done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[-1] if got else None


def publish_raw(settings: MqttSettings, topic: str, payload: bytes, *, retain: bool = False) -> None:
    client = make_client(settings, f"test-{uuid.uuid4().hex[:8]}")
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
