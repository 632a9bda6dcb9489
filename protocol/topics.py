"""Every MQTT topic the system uses, built in one place.

Layout (``root`` defaults to ``parkgate``; tests use a unique root per test)::

    {root}/v1/gates/{gate_id}/events        edge -> cloud   GateEvent, QoS 1
    {root}/v1/gates/{gate_id}/status        edge -> all     GateStatus, retained, last will "offline"
    {root}/v1/gates/{gate_id}/commands      cloud -> edge   GateCommand, QoS 1
    {root}/v1/gates/{gate_id}/results       edge -> cloud   CommandResult, QoS 1
    {root}/v1/gates/{gate_id}/ack           cloud -> edge   GateAck, retained (stored up to seq N)
    {root}/v1/gates/{gate_id}/inspections   edge -> cloud   InspectionResult, QoS 1 (inspection lanes)
    {root}/v1/lots/{lot_id}/availability    cloud -> all    LotAvailability, retained
    {root}/v1/lots/{lot_id}/lists           cloud -> edge   LotLists, retained
    {root}/v1/lots/{lot_id}/alerts          cloud -> all    LotAlerts (overstays), retained
    {root}/v1/lots/{lot_id}/sensors         sensors -> cloud SpaceSensorReport, QoS 1
    {root}/v1/screens/{screen_id}           cloud -> signs  ScreenContent, retained
    {root}/v1/collectors/{name}/status      cloud -> all    CollectorStatus, retained
    {root}/v1/collectors/refresh            tools -> cloud  CollectorRefresh, QoS 1, every collector

Everything a gate publishes lives under its own prefix ``{root}/v1/gates/{gate_id}/``, so a broker
ACL can confine each device to it. Gate ids are therefore unique across the whole system.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol.errors import TopicError

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_ID_RE = re.compile(ID_PATTERN)
VERSION = "v1"


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is safe as one topic level, else raise TopicError."""
    if not _ID_RE.match(value):
        raise TopicError(f"{what} {value!r} must match {ID_PATTERN} (letters, digits, '_', '.', '-')")
    return value


@dataclass(frozen=True)
class Topics:
    """Topic builder bound to one root prefix."""

    root: str = "parkgate"

    def __post_init__(self) -> None:
        if not self.root or any(c in self.root for c in "+#") or self.root.startswith("/"):
            raise TopicError(f"topic root {self.root!r} must be non-empty, without '+', '#' or a leading '/'")

    @property
    def base(self) -> str:
        return f"{self.root}/{VERSION}"

    # -- gates -------------------------------------------------------------------------------
    def gate_prefix(self, gate_id: str) -> str:
        return f"{self.base}/gates/{check_id(gate_id, 'gate id')}"

    def gate_events(self, gate_id: str) -> str:
        return f"{self.gate_prefix(gate_id)}/events"

    def gate_status(self, gate_id: str) -> str:
        return f"{self.gate_prefix(gate_id)}/status"

    def gate_commands(self, gate_id: str) -> str:
        return f"{self.gate_prefix(gate_id)}/commands"

    def gate_results(self, gate_id: str) -> str:
        return f"{self.gate_prefix(gate_id)}/results"

    def gate_ack(self, gate_id: str) -> str:
        return f"{self.gate_prefix(gate_id)}/ack"

    def gate_inspections(self, gate_id: str) -> str:
        return f"{self.gate_prefix(gate_id)}/inspections"

    def all_gate_results(self) -> str:
        return f"{self.base}/gates/+/results"

    def all_gate_inspections(self) -> str:
        return f"{self.base}/gates/+/inspections"

    def all_gate_events(self) -> str:
        return f"{self.base}/gates/+/events"

    def all_gate_status(self) -> str:
        return f"{self.base}/gates/+/status"

    # -- lots, screens, collectors --------------------------------------------------------------
    def lot_availability(self, lot_id: str) -> str:
        return f"{self.base}/lots/{check_id(lot_id, 'lot id')}/availability"

    def lot_lists(self, lot_id: str) -> str:
        return f"{self.base}/lots/{check_id(lot_id, 'lot id')}/lists"

    def lot_alerts(self, lot_id: str) -> str:
        return f"{self.base}/lots/{check_id(lot_id, 'lot id')}/alerts"

    def lot_sensors(self, lot_id: str) -> str:
        return f"{self.base}/lots/{check_id(lot_id, 'lot id')}/sensors"

    def all_lot_sensors(self) -> str:
        return f"{self.base}/lots/+/sensors"

    def all_lot_availability(self) -> str:
        return f"{self.base}/lots/+/availability"

    def screen(self, screen_id: str) -> str:
        return f"{self.base}/screens/{check_id(screen_id, 'screen id')}"

    def all_screens(self) -> str:
        return f"{self.base}/screens/+"

    def collector_status(self, name: str) -> str:
        return f"{self.base}/collectors/{check_id(name, 'collector name')}/status"

    def collectors_refresh(self) -> str:
        """Every collector subscribes (never shared): a change made outside them to re-publish."""
        return f"{self.base}/collectors/refresh"

    # -- parsing -----------------------------------------------------------------------------
    def gate_id_of(self, topic: str) -> str:
        """The gate id in a ``.../gates/{gate_id}/...`` topic; TopicError if it is not one."""
        prefix = f"{self.base}/gates/"
        if not topic.startswith(prefix):
            raise TopicError(f"topic {topic!r} is not under {prefix}")
        gate_id = topic[len(prefix) :].split("/", 1)[0]
        return check_id(gate_id, "gate id")

    def lot_id_of(self, topic: str) -> str:
        """The lot id in a ``.../lots/{lot_id}/...`` topic; TopicError if it is not one."""
        prefix = f"{self.base}/lots/"
        if not topic.startswith(prefix):
            raise TopicError(f"topic {topic!r} is not under {prefix}")
        return check_id(topic[len(prefix) :].split("/", 1)[0], "lot id")
