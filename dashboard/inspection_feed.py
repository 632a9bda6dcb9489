"""What inspection pages follow live: alert steps from the database, results from the lanes.

Alerts are raised by the collector (cloud/intruders.py) straight into the database; nothing about
them travels over MQTT. So one thread per dashboard polls ``inspection_audit`` for rows newer than
the last one seen (an indexed primary-key range, once a second whoever is watching): every step —
a warning, flag or lock raised, a review, an unlock, from this dashboard or any other — is one
change. Inspection results are not stored in the order they happen, so they come from the broker
instead (``gates/+/inspections``, which the dashboard's ACL may read) the moment a lane publishes.

Changes are numbered and kept (the newest :data:`HISTORY`) so any number of page streams can wait
for the ones after the version they last saw, as :class:`dashboard.live.LiveState` does for lots.
The same MQTT client asks the collectors to re-publish a station's lists after an unlock
(``collectors/refresh``), so the lanes hear of it within a second, not at the next re-publish.

Started lazily (:func:`inspection_watch`) by the first page, stream or action that needs it:
a dashboard without inspection stations never opens anything.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cloud.intruders import AlertRow, AuditRow
from parkgate.mqtt import connect_async, make_client, reason_text
from parkgate.settings import MqttSettings
from protocol import InspectionResult, PayloadError, Topics, decode, encode
from protocol.messages import CollectorRefresh, utc_now

logger = logging.getLogger(__name__)

HISTORY = 1000  # changes kept for streams that fell behind
POLL_S = 1.0  # how often the database is asked for new alert steps
POLL_BATCH = 500  # steps read per poll at most (the rest on the next poll)
CONNECT_WAIT_S = 2.0  # an unlock waits this long for the broker before leaving it to the re-publish
WATCH_KEY = "parkgate.inspection.watch"  # stopped by dashboard.stop_background
_WATCH_LOCK = threading.Lock()


@dataclass(frozen=True)
class InspectionChange:
    version: int
    kind: str  # "step" (an alert step, from the database) or "result" (from a lane)
    station_id: str
    data: dict[str, Any]
    audit_id: int | None = None  # for steps: the inspection_audit row id (the SSE event id)


def step_json(step: AuditRow, alert: AlertRow) -> dict[str, Any]:
    """A step and the alert it belongs to, as streams and the API send them."""
    return {
        "id": step.id, "alert_id": step.alert_id, "action": step.action, "actor": step.actor,
        "at": _iso(step.at), "why": step.why, "status": step.status,
        "alert": {
            "id": alert.id, "station_id": alert.station_id, "subject_kind": alert.subject_kind,
            "subject": alert.subject, "kind": alert.kind, "status": alert.status,
        },
    }  # fmt: skip


def steps_after(engine: Engine, after: int, limit: int = POLL_BATCH) -> list[tuple[AuditRow, AlertRow]]:
    """The alert steps with an audit id above ``after``, oldest first."""
    query = (
        select(AuditRow, AlertRow)
        .join(AlertRow, AlertRow.id == AuditRow.alert_id)
        .where(AuditRow.id > after)
        .order_by(AuditRow.id)
        .limit(limit)
    )
    with Session(engine) as s:
        return [(step, alert) for step, alert in s.execute(query)]


def last_step_id(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.scalar(select(func.max(AuditRow.id))) or 0)


def _iso(ts: datetime) -> str:
    """SQLite hands datetimes back naive; every stored time is UTC."""
    return (ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)).isoformat()


class InspectionWatch:
    """Polls alert steps, subscribes to inspection results, and numbers both as changes.

    ``stations``: the station id of each id a lane may put in ``InspectionResult.station`` (the
    station id itself or its lane lot). ``mqtt``: None for no broker (tests that fill it)."""

    def __init__(
        self,
        engine: Engine,
        stations: dict[str, str],
        mqtt_settings: MqttSettings | None,
        *,
        poll_s: float = POLL_S,
    ) -> None:
        self.engine = engine
        self.stations = stations
        self.poll_s = poll_s
        self.version = 0
        self.rejected: Counter[str] = Counter()
        self.connected = threading.Event()
        self._changes: deque[InspectionChange] = deque(maxlen=HISTORY)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._cursor = 0
        self._thread = threading.Thread(target=self._poll_loop, name="inspection-watch", daemon=True)
        self.settings = mqtt_settings
        self.client: mqtt.Client | None = None
        if mqtt_settings is not None:
            self.topics = Topics(mqtt_settings.topic_root)
            client_id = f"dashboard-inspection-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            self.client = make_client(mqtt_settings, client_id)
            self.client.on_connect = self._on_connect
            self.client.on_disconnect = self._on_disconnect
            self.client.on_message = self._on_message
            self.client.on_publish = self._on_publish
        self._refused: dict[int, str] = {}  # message id -> the broker's refusal (PUBACK reason)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self._cursor = last_step_id(self.engine)
        except SQLAlchemyError as err:  # the poll loop tries again; steps from now on still arrive
            logger.warning("inspection watch: cannot read the audit table yet: %s", err)
        self._thread.start()
        if self.client is not None and self.settings is not None:
            connect_async(self.client, self.settings)

    def stop(self) -> None:
        self._stop.set()
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
        if self._thread.is_alive():
            self._thread.join(5)

    # -- changes ----------------------------------------------------------------------------------
    def put(self, kind: str, station_id: str, data: dict[str, Any], audit_id: int | None = None) -> None:
        with self._cond:
            self.version += 1
            self._changes.append(InspectionChange(self.version, kind, station_id, data, audit_id))
            self._cond.notify_all()

    def changes_since(self, version: int, timeout: float) -> list[InspectionChange]:
        """Changes newer than ``version``, waiting up to ``timeout`` s for the first one."""
        with self._cond:
            self._cond.wait_for(lambda: self.version > version, timeout)
            return [c for c in self._changes if c.version > version]

    # -- alert steps from the database ------------------------------------------------------------
    def poll(self) -> int:
        """Read the steps written since the last poll into changes; returns how many."""
        rows = steps_after(self.engine, self._cursor)
        for step, alert in rows:
            self.put("step", alert.station_id, step_json(step, alert), audit_id=step.id)
            self._cursor = step.id
        return len(rows)

    def _poll_loop(self) -> None:
        failing = False
        while not self._stop.wait(self.poll_s):
            try:
                while self.poll() == POLL_BATCH:  # a backlog: read on until it is drained
                    pass
                failing = False
            except Exception:  # the database is away (or anything else): log once, keep trying
                if not failing:
                    logger.exception("inspection watch: cannot read alert steps; retrying")
                failing = True

    # -- inspection results from the broker -------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            logger.error("inspection watch: broker refused connection: %s", reason_text(rc))
            return
        client.subscribe(self.topics.all_gate_inspections(), qos=1)
        self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any = None) -> None:
        self.connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            result = decode(InspectionResult, msg.payload)
            if self.topics.gate_id_of(msg.topic) != result.gate_id:
                raise PayloadError("gate_mismatch", f"gate_id {result.gate_id!r} published on {msg.topic!r}")
        except PayloadError as err:
            self.rejected[err.reason] += 1
            logger.warning("inspection watch: dropped bad result on %s: %s", msg.topic, err)
            return
        station_id = self.stations.get(result.station)
        if station_id is None:
            self.rejected["unknown_station"] += 1
            logger.warning("inspection watch: result %s names unknown station %r", result.id, result.station)
            return
        self.put("result", station_id, {**result.model_dump(mode="json"), "station_id": station_id})

    # -- asking the collectors to re-publish ------------------------------------------------------
    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:  # e.g. "Not authorized": the broker's ACL does not let the dashboard write it
            self._refused[mid] = reason_text(rc)

    def request_refresh(self, lot_ids: list[str]) -> bool:
        """Ask every collector to re-publish these lots and their stations' lists (an unlock made
        here). True once the broker has the request; False without a broker connection (the
        collectors' periodic re-publish, every ``republish_s``, carries the change then)."""
        if self.client is None or not self.connected.wait(CONNECT_WAIT_S):
            return False
        message = CollectorRefresh(lot_ids=sorted(set(lot_ids)), ts=utc_now())
        try:
            info = self.client.publish(self.topics.collectors_refresh(), encode(message), qos=1)
            info.wait_for_publish(CONNECT_WAIT_S)
        except (RuntimeError, ValueError) as err:
            logger.warning("refresh request not confirmed by the broker: %s", err)
            return False
        refused = self._refused.pop(info.mid, None)
        if refused is not None:
            logger.warning(
                "the broker refused the refresh request (%s): the dashboard's MQTT user needs write "
                "access to %s; the lanes get the new lists at the collectors' next re-publish",
                refused, self.topics.collectors_refresh(),
            )  # fmt: skip
            return False
        return info.is_published()


def inspection_watch(app: Flask, stations: dict[str, str], engine: Engine) -> InspectionWatch:
    """The app's watch, made and started on first use (with the broker unless ``LIVE_FEED`` is off)."""
    with _WATCH_LOCK:
        watch: InspectionWatch | None = app.extensions.get(WATCH_KEY)
        if watch is None:
            settings = app.config["PARKGATE"].mqtt if app.config["LIVE_FEED"] else None
            watch = InspectionWatch(
                engine, stations, settings, poll_s=float(app.config.get("INSPECTION_POLL_S", POLL_S))
            )
            watch.start()
            app.extensions[WATCH_KEY] = watch
        return watch
