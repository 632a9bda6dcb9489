"""Remote open (operator role): lift a gate's barrier once from the dashboard, with a reason, a
confirmation step and the gate's answer; every request and every outcome in the audit trail.

The flow: ``/ops/open`` lists the gates of the operator's lots (as their retained status says:
online or offline, barrier, mode); ``/ops/open/<id>`` (also ``/ops/gates/<id>/open``) asks for
the reason, then shows what will happen and asks to confirm (a second page, no script needed);
confirming publishes a
``GateCommand`` (``open``, issuer ``operator:<name>``, the reason, an expiry
``OPEN_TTL_S`` after it is sent) on ``gates/{id}/commands`` and waits for the gate's
``CommandResult`` on ``gates/{id}/results``: *done* (the barrier was lifted; the gate records it
as an event), *refused* (expired, duplicate, ... as the gate says), or *timeout* (no answer
within ``OPEN_WAIT_S``). The wait outlasts the expiry, so after a timeout the gate will not act on
the command any more: an operator who sees "timeout" and tries again never gets two openings.

The gate's lot comes from its retained status (the site config has no gates); a gate whose
status this dashboard has not seen cannot be opened from here (404). A viewer, or a gate of a
lot outside the scope, gets 403 (audited). ``CommandLink`` is one MQTT connection per dashboard
process, subscribed to every gate's results, made on first use.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import paho.mqtt.client as mqtt
from flask import Blueprint, abort, current_app, render_template, request
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from ulid import ULID

from dashboard import live_state
from dashboard.auth import audit, operator, require_lot, role_required
from dashboard.ops_services import ActionRefused, config, scope_lots
from dashboard.plates import check_reason
from dashboard.users import User, can_see_lot
from parkgate.mqtt import connect_async, make_client, reason_text
from parkgate.settings import MqttSettings
from protocol import CommandName, CommandResult, GateCommand, GateStatus, PayloadError, Topics, decode, encode
from protocol.messages import utc_now

logger = logging.getLogger(__name__)

bp = Blueprint("gates", __name__, url_prefix="/ops")

OPEN_TTL_S = 8.0  # the gate refuses the command after this (short: a stale open must never lift the arm)
OPEN_WAIT_S = 10.0  # how long the page waits for the gate's answer (longer than the expiry)
CONNECT_WAIT_S = 3.0
REASON_MAX = 200  # GateCommand.reason
Outcome = Literal["done", "refused", "timeout"]


class BrokerUnavailable(Exception):
    """The broker cannot be reached (or the command not handed to it)."""


@dataclass
class _Waiting:
    event: threading.Event
    result: CommandResult | None = None


class CommandLink:
    """One MQTT connection for operators' gate commands: publish a command, wait for its result."""

    def __init__(self, settings: MqttSettings, client_id: str) -> None:
        self.topics = Topics(settings.topic_root)
        self.ready = threading.Event()  # connected and subscribed to the results
        self._waiting: dict[str, _Waiting] = {}
        self._lock = threading.Lock()
        self._sub_mid: int | None = None
        self.client = make_client(settings, client_id)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        connect_async(self.client, settings)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            logger.error("broker refused the command link: %s", reason_text(rc))
            return
        _result, self._sub_mid = client.subscribe(self.topics.all_gate_results(), qos=1)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self.ready.clear()
        logger.warning("command link disconnected: %s", reason_text(rc))

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, codes: Any, _p: Any = None) -> None:
        if mid == self._sub_mid and not any(getattr(c, "is_failure", False) for c in codes):
            self.ready.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            result = decode(CommandResult, msg.payload)
        except PayloadError as err:
            logger.warning("dropped bad command result on %s: %s", msg.topic, err)
            return
        with self._lock:
            waiting = self._waiting.get(result.command_id)
        if waiting is None:
            if result.command_id.startswith("OPS"):  # not ours, or answered after the page gave up
                logger.info(
                    "late result of command %s: %s (%s)", result.command_id, result.result, result.reason
                )
            return
        waiting.result = result
        waiting.event.set()

    def send(
        self, command: GateCommand, wait_s: float, connect_s: float = CONNECT_WAIT_S
    ) -> CommandResult | None:
        """Publish ``command`` (QoS 1, never retained: a retained open would lift the barrier again
        whenever the gate reconnects) and wait for its result; None after ``wait_s``.
        :class:`BrokerUnavailable` when not connected within ``connect_s``."""
        if not self.ready.wait(connect_s):
            raise BrokerUnavailable("the broker cannot be reached")
        waiting = _Waiting(threading.Event())
        with self._lock:
            self._waiting[command.id] = waiting
        try:
            info = self.client.publish(self.topics.gate_commands(command.gate_id), encode(command), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise BrokerUnavailable(f"publish failed: {mqtt.error_string(info.rc)}")
            waiting.event.wait(wait_s)
            return waiting.result
        finally:
            with self._lock:
                self._waiting.pop(command.id, None)


_LINK_LOCK = threading.Lock()


def command_link() -> CommandLink:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with _LINK_LOCK:
        link: CommandLink | None = app.extensions.get("parkgate.ops.commands")
        if link is None:
            client_id = f"dashboard-cmd-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            link = app.extensions["parkgate.ops.commands"] = CommandLink(config().mqtt, client_id)
        return link


# -- the action (shared with the JSON API) ------------------------------------------------------------
@dataclass(frozen=True)
class OpenOutcome:
    gate_id: str
    lot_id: str
    command_id: str
    outcome: Outcome
    detail: str  # the gate's reason, or why there was none
    sent_at: datetime
    expires_at: datetime
    answered_at: datetime | None

    def to_json(self) -> dict[str, object]:
        return {
            "gate_id": self.gate_id, "lot_id": self.lot_id, "command_id": self.command_id,
            "result": self.outcome, "detail": self.detail, "sent_at": self.sent_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "answered_at": self.answered_at.isoformat() if self.answered_at else None,
        }  # fmt: skip


def gate_status(gate_id: str) -> GateStatus:
    """The gate's retained status, its lot in the operator's scope (403, audited), or 404."""
    status = live_state(current_app).gates.get(gate_id)
    if status is None:
        abort(404, description=f"gate {gate_id!r} is unknown here: no status received from it")
    require_lot(status.lot_id)
    return status


def open_gate(user: User, status: GateStatus, reason: str) -> OpenOutcome:
    """Send ``open`` to the gate and wait for its answer; the request and the outcome audited."""
    target = f"gate:{status.gate_id}"
    try:
        reason = check_reason(reason, REASON_MAX)
    except ActionRefused as err:
        audit("gate.open", target=target, detail=err.message, result="failed")
        raise
    ttl = float(current_app.config.get("OPS_OPEN_TTL_S", OPEN_TTL_S))
    wait = float(current_app.config.get("OPS_OPEN_WAIT_S", OPEN_WAIT_S))
    sent = utc_now()
    command = GateCommand(
        id=f"OPS{ULID()}", gate_id=status.gate_id, command=CommandName.OPEN, issuer=f"operator:{user.name}",
        ts=sent, expires_at=sent + timedelta(seconds=ttl), reason=reason,
    )  # fmt: skip
    audit("gate.open.request", target=target, detail=f"{command.id} ({status.lot_id}): {reason}")
    try:
        result = command_link().send(
            command, wait, float(current_app.config.get("OPS_CONNECT_WAIT_S", CONNECT_WAIT_S))
        )
    except BrokerUnavailable as err:
        audit("gate.open", target=target, detail=f"{command.id}: not sent, {err}", result="failed")
        raise ActionRefused(
            503, f"the command was not sent: {err}",
            _("The command was not sent: the message broker cannot be reached. Nothing was opened."),
        ) from None  # fmt: skip
    if result is None:
        outcome: Outcome = "timeout"
        detail = f"no answer within {wait:g} s; the command expired at {command.expires_at.isoformat()}"
    else:
        outcome, detail = result.result, result.reason
    audit(
        "gate.open", target=target, detail=f"{command.id} {outcome}: {detail}",
        result="ok" if outcome == "done" else "failed",
    )  # fmt: skip
    logger.info("remote open of %s by %s: %s (%s)", status.gate_id, user.name, outcome, detail)
    return OpenOutcome(
        status.gate_id, status.lot_id, command.id, outcome, detail, sent, command.expires_at,
        result.ts if result else None,
    )  # fmt: skip


# -- pages --------------------------------------------------------------------------------------------
def barrier_texts() -> dict[str, str]:
    return {"online": _("Online"), "offline": _("Offline")}


@bp.get("/open")
@role_required("operator")
def gates() -> str:
    """The gates of the operator's lots, each with a button to open it."""
    user = operator()
    found = sorted(
        (g for g in live_state(current_app).gates.values() if can_see_lot(user, g.lot_id)),
        key=lambda g: (g.lot_id, g.gate_id),
    )
    return render_template("ops/gates_open.html", gates=found, lots=scope_lots(user), states=barrier_texts())


@bp.route("/gates/<gate_id>/open", methods=["GET", "POST"])  # the same page under the gate's own path
@bp.route("/open/<gate_id>", methods=["GET", "POST"])  # registered first, so the one url_for makes
@role_required("operator")
def open_page(gate_id: str) -> ResponseReturnValue:
    user = operator()
    status = gate_status(gate_id)
    step = request.form.get("step", "") if request.method == "POST" else ""
    reason = request.form.get("reason", "")[: REASON_MAX + 100]
    page = {"gate": status, "lots": scope_lots(user), "reason": reason, "reason_max": REASON_MAX,
            "states": barrier_texts(), "ttl": float(current_app.config.get("OPS_OPEN_TTL_S", OPEN_TTL_S))}  # fmt: skip
    if step not in ("confirm", "send"):
        return render_template("ops/gate_open.html", step="ask", error=None, **page)
    try:
        page["reason"] = reason = check_reason(reason, REASON_MAX)
    except ActionRefused as err:
        audit("gate.open", target=f"gate:{gate_id}", detail=err.message, result="failed")
        return render_template("ops/gate_open.html", step="ask", error=err.text, **page), 400
    if step == "confirm":
        return render_template("ops/gate_open.html", step="confirm", error=None, **page)
    try:
        outcome = open_gate(user, status, reason)
    except ActionRefused as err:
        return render_template("ops/gate_open.html", step="confirm", error=err.text, **page), err.status
    return render_template("ops/gate_open.html", step="result", outcome=outcome, error=None, **page)
