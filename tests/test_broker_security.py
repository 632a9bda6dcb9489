"""The production broker config (deploy/mosquitto/) on a real Mosquitto.

The broker runs ``deploy/mosquitto/mosquitto.conf`` and its ACL as written, moved to a free
loopback port and a temp folder (parkgate.broker.SecureMosquitto). Its CA, certificate and
passwords are made by ``deploy/mosquitto/make-credentials.sh`` itself; every client is the
project's own (parkgate.mqtt.make_client with MqttSettings, the password read from the environment).
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode
from ulid import ULID

from cloud.collector import Collector
from cloud.config import CollectorConfig, LotConfig
from edge.mqtt_link import EdgeLink
from edge.outbox import Outbox
from parkgate.broker import SecureMosquitto
from parkgate.mqtt import make_client
from parkgate.settings import MqttSettings
from protocol import Action, Decision, Direction, GateEvent, LotLists, Reason, Topics, encode
from protocol.messages import utc_now

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "mosquitto"
SCRIPT = DEPLOY / "make-credentials.sh"
GATE_A, GATE_B = "L01-in", "L02-in"
TOPICS = Topics("parkgate")  # the root the production ACL is written for
NOT_AUTHORIZED = 135


def make_credentials(
    out: Path, gates: list[str], *hosts: str, listing_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    listing = (listing_dir or out.parent) / f"{out.name}-gates.txt"
    listing.write_text("# gate ids\n" + "\n".join(gates) + "\n", encoding="utf-8")
    host_args = [arg for h in hosts or ("broker.test",) for arg in ("--host", h)]
    return subprocess.run(
        ["bash", str(SCRIPT), "--out", str(out), *host_args, str(listing)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass(frozen=True)
class Credentials:
    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca" / "ca.crt"

    def password(self, user: str) -> str:
        text = (self.root / "devices" / f"{user}.env").read_text(encoding="utf-8")
        return re.search(r"^PARKGATE_MQTT_PASSWORD=(\S+)$", text, re.M).group(1)  # type: ignore[union-attr]

    def broker_files(self) -> dict[str, Path]:
        b = self.root / "broker"
        return {
            "cafile": b / "ca.crt",
            "certfile": b / "server.crt",
            "keyfile": b / "server.key",
            "password_file": b / "passwd",
            "acl_file": b / "acl",
        }


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    out = tmp_path_factory.mktemp("credentials") / "out"
    done = make_credentials(out, [GATE_A, GATE_B])
    assert done.returncode == 0, done.stderr
    return Credentials(out)


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA, with nothing to do with the broker's certificate."""
    out = tmp_path_factory.mktemp("foreign") / "out"
    assert make_credentials(out, ["X"]).returncode == 0
    return out / "ca" / "ca.crt"


@pytest.fixture
def secure_broker(tmp_path: Path, credentials: Credentials) -> Iterator[SecureMosquitto]:
    running = SecureMosquitto(tmp_path / "broker", DEPLOY / "mosquitto.conf", credentials.broker_files())
    with running:
        yield running


@pytest.fixture
def settings_for(
    secure_broker: SecureMosquitto, credentials: Credentials, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., MqttSettings]:
    """MqttSettings for ``user`` (None: anonymous); its password goes into an environment variable."""

    def build(
        user: str | None, *, password: str | None = None, tls_ca: Path | None = credentials.ca
    ) -> MqttSettings:
        env = None
        if user:
            env = f"PARKGATE_TEST_PW_{uuid.uuid4().hex[:8]}"
            monkeypatch.setenv(env, password if password is not None else credentials.password(user))
        return MqttSettings(
            host=secure_broker.host,
            port=secure_broker.port,
            username=user,
            password_env=env,
            tls_ca=tls_ca,
            keepalive_s=5,
        )

    return build


class Client:
    """A make_client() client that records CONNACK, PUBACK and SUBACK reason codes and messages."""

    def __init__(self, settings: MqttSettings, client_id: str | None = None) -> None:
        self.settings = settings
        self.mqtt = make_client(settings, client_id or f"test-{uuid.uuid4().hex[:8]}")
        self.cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.disconnects: list[ReasonCode] = []
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_disconnect = self._on_disconnect
        self.mqtt.on_publish = self._on_publish
        self.mqtt.on_subscribe = self._on_subscribe
        self.mqtt.on_message = self._on_message

    def _record(self, change: Callable[[], object]) -> None:
        with self.cond:
            change()
            self.cond.notify_all()

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self._record(lambda: setattr(self, "connack", rc))

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self._record(lambda: self.disconnects.append(rc))

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        self._record(lambda: self.pubacks.__setitem__(mid, rc))

    def _on_subscribe(self, _c: mqtt.Client, _u: object, mid: int, rcs: list[ReasonCode], _p: object) -> None:
        self._record(lambda: self.subacks.__setitem__(mid, rcs))

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._record(lambda: self.messages.append((msg.topic, bytes(msg.payload))))

    def _wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def connect(self) -> ReasonCode | None:
        """The CONNACK's reason code, or None when the broker closed the connection without one."""
        self.mqtt.connect(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self.mqtt.loop_start()
        self._wait(lambda: self.connack is not None or bool(self.disconnects))
        return self.connack

    def publish(self, topic: str, payload: bytes = b"{}", *, retain: bool = False) -> ReasonCode:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        mid = self.mqtt.publish(topic, payload, qos=1, retain=retain).mid
        assert self._wait(lambda: mid in self.pubacks), f"no PUBACK for {topic}"
        return self.pubacks[mid]

    def subscribe(self, *topics: str) -> list[ReasonCode]:
        _rc, mid = self.mqtt.subscribe([(t, 1) for t in topics])
        assert mid is not None
        assert self._wait(lambda: mid in self.subacks), f"no SUBACK for {topics}"
        return self.subacks[mid]

    def wait_for_message(self, topic: str, timeout: float = 5.0) -> bool:
        return self._wait(lambda: any(t == topic for t, _ in self.messages), timeout)

    def topics_received(self) -> list[str]:
        with self.cond:
            return [t for t, _ in self.messages]

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@pytest.fixture
def connect(settings_for: Callable[..., MqttSettings]) -> Iterator[Callable[..., Client]]:
    """Connect as a user (password from the credentials) and expect success; closed afterwards."""
    opened: list[Client] = []

    def open_as(user: str, client_id: str | None = None) -> Client:
        client = Client(settings_for(user), client_id)
        opened.append(client)
        rc = client.connect()
        assert rc is not None and not rc.is_failure, f"{user} could not connect: {rc}"
        return client

    yield open_as
    for client in opened:
        client.close()


# paho 2 leaves the socket of a failed TLS handshake to the garbage collector (which closes it).
PAHO_TLS_FAILURE = pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")


def refused(settings: MqttSettings) -> ReasonCode | None:
    client = Client(settings)
    try:
        return client.connect()
    finally:
        client.close()


# -- who may connect ---------------------------------------------------------------------------
def test_anonymous_connection_refused(settings_for: Callable[..., MqttSettings]) -> None:
    rc = refused(settings_for(None))
    assert rc is not None and rc.value == NOT_AUTHORIZED, rc


@pytest.mark.parametrize(
    ("user", "password"), [(GATE_A, "not-the-password"), (GATE_A, ""), ("L99-in", "anything")]
)
def test_wrong_password_or_unknown_user_refused(
    settings_for: Callable[..., MqttSettings], user: str, password: str
) -> None:
    rc = refused(settings_for(user, password=password))
    assert rc is not None and rc.value == NOT_AUTHORIZED, rc


def test_another_devices_password_refused(
    settings_for: Callable[..., MqttSettings], credentials: Credentials
) -> None:
    rc = refused(settings_for(GATE_A, password=credentials.password(GATE_B)))
    assert rc is not None and rc.value == NOT_AUTHORIZED, rc


def test_plain_tcp_client_refused(
    settings_for: Callable[..., MqttSettings], secure_broker: SecureMosquitto
) -> None:
    """A client without TLS (valid password) talking to the TLS port gets no CONNACK at all."""
    client = Client(settings_for(GATE_A, tls_ca=None))
    try:
        assert client.connect() is None
        assert client.disconnects, "the broker should have closed the connection"
    finally:
        client.close()
    assert "wrong version number" in secure_broker.log.read_text(errors="replace")


@PAHO_TLS_FAILURE
def test_client_not_trusting_the_ca_refuses_the_broker(
    settings_for: Callable[..., MqttSettings], foreign_ca: Path
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        refused(settings_for(GATE_A, tls_ca=foreign_ca))


@PAHO_TLS_FAILURE
def test_client_checks_the_broker_name(
    settings_for: Callable[..., MqttSettings], secure_broker: SecureMosquitto
) -> None:
    """The certificate names broker.test and 127.0.0.1, not "localhost": the name is checked too."""
    settings = settings_for(GATE_A).model_copy(update={"host": "localhost"})
    with pytest.raises(ssl.SSLCertVerificationError, match=r"Hostname mismatch|doesn't match"):
        refused(settings)


def test_only_the_tls_listener_is_open(secure_broker: SecureMosquitto) -> None:
    ports = re.findall(r"listen socket on port (\d+)", secure_broker.log.read_text(errors="replace"))
    assert ports and set(ports) == {str(secure_broker.port)}


# -- what a gate may publish -------------------------------------------------------------------
def test_gate_publishes_its_own_events_and_the_collector_receives_them(
    connect: Callable[..., Client],
) -> None:
    collector = connect("collector")
    assert not collector.subscribe(TOPICS.all_gate_events(), TOPICS.all_gate_status())[0].is_failure
    gate = connect(GATE_A)
    assert not gate.publish(TOPICS.gate_events(GATE_A), b'{"seq": 1}').is_failure
    assert not gate.publish(TOPICS.gate_status(GATE_A), b'{"state": "online"}', retain=True).is_failure
    assert collector.wait_for_message(TOPICS.gate_events(GATE_A))
    assert collector.wait_for_message(TOPICS.gate_status(GATE_A))


@pytest.mark.parametrize(
    "topic",
    [
        TOPICS.gate_events(GATE_B),
        TOPICS.gate_status(GATE_B),
        TOPICS.lot_availability("L01"),
        TOPICS.lot_lists("L01"),
        TOPICS.screen("S1"),
        TOPICS.collector_status("c1"),
        "parkgate/v1/gates/L02-in",
        "elsewhere/v1/gates/L01-in/events",
    ],
)
def test_gate_cannot_publish_as_another_gate_or_the_collector(
    connect: Callable[..., Client], topic: str
) -> None:
    collector = connect("collector")
    collector.subscribe("parkgate/#")
    watcher = connect("dashboard")  # reads the screens, which the collector cannot
    watcher.subscribe("parkgate/#")
    gate = connect(GATE_A)
    rc = gate.publish(topic, b"forged")
    assert rc.value == NOT_AUTHORIZED, rc
    # The gate's own event is published after the forged one: once it arrives, the forged one
    # would have arrived before it.
    assert not gate.publish(TOPICS.gate_events(GATE_A)).is_failure
    assert collector.wait_for_message(TOPICS.gate_events(GATE_A))
    assert topic not in collector.topics_received()
    time.sleep(0.1)
    assert topic not in watcher.topics_received()


# -- what a gate may read ----------------------------------------------------------------------
def test_gate_cannot_read_another_gates_commands(connect: Callable[..., Client]) -> None:
    gate_a = connect(GATE_A)
    gate_b = connect(GATE_B)
    # Mosquitto 2.0 grants the SUBACK and filters each message by the ACL on delivery; a broker
    # that refuses the subscription outright (reason code >= 0x80) is as good.
    gate_a.subscribe(
        TOPICS.gate_commands(GATE_B), "parkgate/v1/gates/+/commands", "#", TOPICS.gate_commands(GATE_A)
    )
    gate_b.subscribe(TOPICS.gate_commands(GATE_B))
    collector = connect("collector")
    assert not collector.publish(TOPICS.gate_commands(GATE_B), b'{"command": "open"}').is_failure
    assert not collector.publish(TOPICS.gate_ack(GATE_B), b'{"seq": 5}').is_failure
    assert not collector.publish(TOPICS.gate_commands(GATE_A), b'{"command": "close"}').is_failure
    assert gate_b.wait_for_message(TOPICS.gate_commands(GATE_B))  # it was really sent
    assert gate_a.wait_for_message(TOPICS.gate_commands(GATE_A))  # sent after B's
    assert not [t for t in gate_a.topics_received() if "/L02-in/" in t]


def test_gate_reads_its_own_commands_ack_and_the_lots(connect: Callable[..., Client]) -> None:
    collector = connect("collector")
    wanted = [
        TOPICS.lot_availability("L01"),
        TOPICS.lot_lists("L01"),
        TOPICS.lot_availability("L02"),
        TOPICS.gate_ack(GATE_A),
    ]
    for topic in wanted:  # retained, as the collector publishes them
        assert not collector.publish(topic, b"{}", retain=True).is_failure
    gate = connect(GATE_A)
    gate.subscribe(TOPICS.gate_commands(GATE_A), TOPICS.gate_ack(GATE_A), "parkgate/v1/lots/#")
    assert not collector.publish(TOPICS.gate_commands(GATE_A), b'{"command": "open"}').is_failure
    for topic in [*wanted, TOPICS.gate_commands(GATE_A)]:
        assert gate.wait_for_message(topic), f"{GATE_A} did not receive {topic}"


def test_gate_cannot_take_over_another_users_connection(connect: Callable[..., Client]) -> None:
    """Client ids are the user names (use_username_as_clientid): reusing the collector's client id
    neither disconnects the collector nor ends its session."""
    collector = connect("collector", client_id="collector-c1")
    collector.subscribe(TOPICS.all_gate_events())
    connect(GATE_A, client_id="collector-c1")
    gate_b = connect(GATE_B, client_id=f"gate-{GATE_A}")
    assert not gate_b.publish(TOPICS.gate_events(GATE_B)).is_failure
    assert collector.wait_for_message(TOPICS.gate_events(GATE_B))
    assert collector.disconnects == []


# -- the dashboard -----------------------------------------------------------------------------
def test_dashboard_reads_what_it_shows_and_sends_commands_only(connect: Callable[..., Client]) -> None:
    collector = connect("collector")
    gate = connect(GATE_A)
    gate.subscribe(TOPICS.gate_commands(GATE_A))
    dashboard = connect("dashboard")
    dashboard.subscribe(TOPICS.all_lot_availability(), TOPICS.all_screens(), TOPICS.all_gate_status())
    assert not collector.publish(TOPICS.lot_availability("L01"), b"{}").is_failure
    assert not collector.publish(TOPICS.screen("S1"), b"{}").is_failure
    assert not gate.publish(TOPICS.gate_status(GATE_A), b"{}").is_failure
    for topic in (TOPICS.lot_availability("L01"), TOPICS.screen("S1"), TOPICS.gate_status(GATE_A)):
        assert dashboard.wait_for_message(topic)
    assert not dashboard.publish(TOPICS.gate_commands(GATE_A), b'{"command": "open"}').is_failure
    assert gate.wait_for_message(TOPICS.gate_commands(GATE_A))
    for forged in (TOPICS.gate_events(GATE_A), TOPICS.lot_availability("L01"), TOPICS.screen("S1")):
        assert dashboard.publish(forged).value == NOT_AUTHORIZED


# -- the real services -------------------------------------------------------------------------
def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_gate_and_collector_work_through_tls_and_the_acl(
    tmp_path: Path, settings_for: Callable[..., MqttSettings]
) -> None:
    """The project's own edge link and collector: events stored, the collector's confirmations
    reach the gate (its outbox drains), and so do its lot's retained lists."""
    collector = Collector(
        CollectorConfig(
            name="c1",
            database=f"sqlite:///{tmp_path / 'events.sqlite'}",
            mqtt=settings_for("collector"),
            lots=[LotConfig(id="L01", name="lot", capacity=100, deny=["鄂A12345"])],
        )
    )
    outbox = Outbox(tmp_path / "outbox.sqlite")
    lists: list[LotLists] = []
    link = EdgeLink(settings_for(GATE_A), GATE_A, "L01", outbox, on_lists=lists.append, confirm_timeout_s=1.0)

    def build(seq: int) -> tuple[str, str, bytes]:
        ev = GateEvent(
            epoch=outbox.epoch, id=str(ULID()), seq=seq, ts=utc_now(), lot_id="L01", gate_id=GATE_A,
            direction=Direction.ENTRY, plate=None, decision=Decision(action=Action.OPEN, reason=Reason.NO_PLATE_READ),
        )  # fmt: skip
        return ev.id, TOPICS.gate_events(GATE_A), encode(ev)

    collector.start()
    link.start()
    try:
        wait_until(lambda: link.connected.is_set() and collector.connected.is_set(), "connections")
        for _ in range(5):
            outbox.append(build)
            link.wake()
        wait_until(lambda: collector.stored == 5, "events stored")
        wait_until(lambda: outbox.backlog()[0] == 0, "the collector's confirmation at the gate")
        wait_until(lambda: bool(lists), "the lot's lists at the gate")
        assert "鄂A12345" in lists[-1].deny
    finally:
        link.stop()
        collector.close()
        outbox.close()


# -- the provisioning script -------------------------------------------------------------------
def test_credentials_are_kept_when_run_again_and_removed_gates_lose_access(tmp_path: Path) -> None:
    out = tmp_path / "creds"
    first = make_credentials(out, [GATE_A, GATE_B])
    assert first.returncode == 0, first.stderr
    for user in ("collector", "dashboard", GATE_A, GATE_B):
        assert str(out / "devices" / f"{user}.env") in first.stdout  # says where each secret went
        assert (out / "devices" / f"{user}.env").stat().st_mode & 0o077 == 0
    assert (out / "ca" / "ca.key").stat().st_mode & 0o077 == 0
    before = {p.name: p.read_bytes() for p in (out / "devices").iterdir()}
    ca = (out / "ca" / "ca.crt").read_bytes()

    again = make_credentials(out, [GATE_A, "L03-out"])
    assert again.returncode == 0, again.stderr
    assert (out / "ca" / "ca.crt").read_bytes() == ca
    assert (out / "devices" / f"{GATE_A}.env").read_bytes() == before[f"{GATE_A}.env"]
    users = [line.split(":", 1)[0] for line in (out / "broker" / "passwd").read_text().splitlines()]
    assert users == ["collector", "dashboard", GATE_A, "L03-out"]


def test_broker_certificate_names_the_hosts(tmp_path: Path) -> None:
    out = tmp_path / "creds"
    assert make_credentials(out, [GATE_A], "mqtt.example.cn", "192.0.2.7").returncode == 0
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(out / "broker" / "server.crt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:mqtt.example.cn" in text and "IP Address:192.0.2.7" in text and "IP Address:127.0.0.1" in text


@pytest.mark.parametrize(
    ("gates", "message"),
    [
        (["L01 in"], "must match"),
        (["L01/in"], "must match"),
        (["+"], "must match"),
        (["collector"], "reserved"),
        ([GATE_A, GATE_A], "listed twice"),
        ([], "lists no gate ids"),
    ],
)
def test_bad_gate_lists_are_refused(tmp_path: Path, gates: list[str], message: str) -> None:
    done = make_credentials(tmp_path / "creds", gates)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "creds").exists()


def test_secrets_are_never_written_into_a_git_work_tree(tmp_path: Path) -> None:
    target = REPO / f"secrets-{uuid.uuid4().hex[:8]}"
    done = make_credentials(target, [GATE_A], listing_dir=tmp_path)
    assert done.returncode == 2 and "git work tree" in done.stderr
    assert not target.exists()


def test_acl_is_written_for_the_default_topic_root() -> None:
    acl = (DEPLOY / "acl").read_text(encoding="utf-8")
    rules = [line.split()[-1] for line in acl.splitlines() if line.split()[:1] in (["pattern"], ["topic"])]
    assert rules and all(rule.startswith(f"{MqttSettings().topic_root}/v1/") for rule in rules)
    assert os.access(SCRIPT, os.X_OK)
