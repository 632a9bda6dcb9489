"""The collector's broker link (cloud/broker_link.py): a child process holding the MQTT session.

Against a real Mosquitto: messages of every shape arrive (the short path for plain QoS 1 publishes
and paho's own for the rest), only acknowledged ones are gone for good, a link that dies is
replaced and what it had not acknowledged comes again, and a collector killed outright leaves no
link behind and its "offline" will on the broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.broker_link import BrokerLink, Inbound
from parkgate.demo import write_toml
from parkgate.mqtt import make_client, wait_collectors_online
from parkgate.settings import MqttSettings
from protocol import CollectorStatus, Topics, decode
from tests.mqtt_helpers import retained
from tests.waiting import processes_mentioning, wait_until

pytestmark = pytest.mark.integration


class Heard:
    """What a link reported, read by a thread of its own as the collector's writer reads it."""

    def __init__(self) -> None:
        self.messages: list[Inbound] = []
        self.subscribed = threading.Event()
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def read(self, link: BrokerLink) -> None:
        while not self.stop.is_set():
            items = link.receive(0.1)
            with self.lock:
                self.messages.extend(items)

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [payload for _t, payload, _m, _q in self.messages]


def open_link(settings: MqttSettings, heard: Heard, client_id: str = "collector-t") -> BrokerLink:
    link = BrokerLink(
        settings,
        client_id,
        [f"{settings.topic_root}/in/#"],
        session_expiry_s=300,
        will=(f"{settings.topic_root}/will", b"gone"),
        on_subscribed=lambda _refused: heard.subscribed.set(),
        on_disconnected=lambda _reason: heard.subscribed.clear(),
    )
    link.start()
    threading.Thread(target=heard.read, args=(link,), daemon=True).start()
    wait_until(heard.subscribed.is_set, what="the link's subscription")
    return link


def close_link(link: BrokerLink, heard: Heard) -> None:
    heard.stop.set()
    time.sleep(0.2)  # its reader is done
    link.close([])


def publisher(settings: MqttSettings) -> mqtt.Client:
    client = make_client(settings, f"pub-{os.getpid()}-{time.monotonic_ns()}")
    client.connect(settings.host, settings.port)
    client.loop_start()
    return client


def link_pids(client_id: str) -> list[int]:
    """Live link processes started for ``client_id`` (their command line names it)."""
    return processes_mentioning("cloud.broker_link", f" {client_id}")


def test_every_shape_of_message_arrives_and_acknowledged_ones_do_not_come_again(
    mqtt_settings: MqttSettings,
) -> None:
    heard = Heard()
    link = open_link(mqtt_settings, heard)
    pub = publisher(mqtt_settings)
    root = mqtt_settings.topic_root
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = ("k", "v")  # a property: paho's own path, not the short one
    try:
        pub.publish(f"{root}/in/plain", b"one", qos=1).wait_for_publish(5)
        pub.publish(f"{root}/in/props", b"two", qos=1, properties=props).wait_for_publish(5)
        pub.publish(f"{root}/in/qos0", b"three", qos=0).wait_for_publish(5)
        pub.publish(f"{root}/in/\u6b66\u6c49", "四".encode(), qos=1).wait_for_publish(5)
        wait_until(lambda: len(heard.messages) == 4, what="four messages")
        by_topic = {topic: (payload, mid, qos) for topic, payload, mid, qos in heard.messages}
        assert by_topic[f"{root}/in/plain"][0::2] == (b"one", 1)
        assert by_topic[f"{root}/in/props"][0::2] == (b"two", 1)
        assert by_topic[f"{root}/in/qos0"][0::2] == (b"three", 0)
        assert by_topic[f"{root}/in/\u6b66\u6c49"][0::2] == ("四".encode(), 1)
        link.ack([(mid, qos) for _t, _p, mid, qos in heard.messages if mid is not None])
        time.sleep(0.5)  # the acknowledgements reach the broker
    finally:
        close_link(link, heard)
        pub.disconnect()
        pub.loop_stop()
    again = Heard()
    link = open_link(mqtt_settings, again)  # the same session resumed
    try:
        time.sleep(1.0)
        assert again.messages == []
    finally:
        close_link(link, again)


def test_a_link_that_dies_is_replaced_and_what_it_did_not_acknowledge_comes_again(
    mqtt_settings: MqttSettings,
) -> None:
    heard = Heard()
    link = open_link(mqtt_settings, heard, "collector-restart")
    pub = publisher(mqtt_settings)
    try:
        pub.publish(f"{mqtt_settings.topic_root}/in/a", b"kept", qos=1).wait_for_publish(5)
        wait_until(lambda: heard.payloads() == [b"kept"], what="the message")
        (pid,) = link_pids("collector-restart")
        os.kill(pid, signal.SIGKILL)  # received, never acknowledged
        wait_until(lambda: heard.payloads() == [b"kept", b"kept"], timeout=15, what="the message again")
        assert len(link_pids("collector-restart")) == 1
    finally:
        close_link(link, heard)
        pub.disconnect()
        pub.loop_stop()
    assert link_pids("collector-restart") == []


def test_a_collector_killed_outright_leaves_no_link_and_says_offline(
    mqtt_settings: MqttSettings, tmp_path: Path
) -> None:
    config = write_toml(
        tmp_path / "collector.toml",
        {
            "name": "killed",
            "database": f"sqlite:///{tmp_path / 'events.sqlite'}",
            "mqtt": {
                "host": mqtt_settings.host,
                "port": mqtt_settings.port,
                "topic_root": mqtt_settings.topic_root,
            },
            "lots": [{"id": "L1", "name": "Lot 1", "capacity": 10}],
        },
    )
    since = datetime.now(UTC)
    proc = subprocess.Popen([sys.executable, "-m", "parkgate", "collector", "--config", str(config)])
    try:

        def running() -> None:
            assert proc.poll() is None, "the collector ended"

        assert wait_collectors_online(mqtt_settings, ["killed"], since=since, timeout=60, alive=running)
        assert len(link_pids("collector-killed")) == 1
        proc.kill()
        proc.wait(10)
        wait_until(lambda: link_pids("collector-killed") == [], what="the link to end with its collector")
        topic = Topics(mqtt_settings.topic_root).collector_status("killed")

        def offline() -> bool:
            payload = retained(mqtt_settings, topic, timeout=1.0)
            return payload is not None and decode(CollectorStatus, payload).state == "offline"

        wait_until(offline, timeout=15, what="the collector's offline will")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
