"""Remote commands to a gate: a table of name -> handler, with expiry checked first.

A command carries its id, issuer and an expiry; one that arrives after it expired is refused
and reported, however it got delayed (a stale "open" queued for hours never lifts the barrier).
A repeated command id (QoS 1 redelivery) is refused as a duplicate, so "open" acts once.
Every command gets a :class:`CommandResult`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from protocol import CommandName, CommandResult, GateCommand, GateMode
from protocol.messages import utc_now

logger = logging.getLogger(__name__)

SEEN_IDS = 10_000


class CommandHandler:
    def __init__(
        self,
        gate_id: str,
        *,
        open_barrier: Callable[[str], None],
        set_mode: Callable[[GateMode], None],
        reload_lists: Callable[[], None],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.gate_id = gate_id
        self._clock = clock
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._open_barrier = open_barrier
        self._set_mode = set_mode
        self._reload_lists = reload_lists
        self._handlers: dict[CommandName, Callable[[GateCommand], str]] = {
            CommandName.OPEN: self._open,
            CommandName.SET_MODE: self._mode,
            CommandName.RELOAD_LISTS: self._reload,
        }

    def _open(self, command: GateCommand) -> str:
        self._open_barrier(f"remote open by {command.issuer}: {command.reason}")
        return "barrier opened"

    def _mode(self, command: GateCommand) -> str:
        mode = command.mode or GateMode.NORMAL
        self._set_mode(mode)
        return f"mode set to {mode.value}"

    def _reload(self, _command: GateCommand) -> str:
        self._reload_lists()
        return "lists reloaded"

    def handle(self, command: GateCommand) -> CommandResult:
        now = self._clock()
        if command.id in self._seen:
            return self._result(command, "refused", "duplicate: this command id was already handled")
        self._remember(command.id)
        if now > command.expires_at:
            late = (now - command.expires_at).total_seconds()
            logger.warning(
                "refused expired command %s (%s from %s, expired %.0f s ago)",
                command.id,
                command.command,
                command.issuer,
                late,
            )
            return self._result(
                command, "refused", f"expired {late:.0f} s ago (issued {command.ts.isoformat()})"
            )
        handler = self._handlers.get(command.command)
        if handler is None:  # a name the model knows but this gate has no handler for
            return self._result(command, "refused", f"unknown command {command.command}")
        detail = handler(command)
        logger.info(
            "command %s from %s: %s (%s)", command.id, command.issuer, detail, command.reason or "no reason"
        )
        return self._result(command, "done", detail)

    def _remember(self, command_id: str) -> None:
        self._seen[command_id] = None
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)

    def _result(self, command: GateCommand, result: Literal["done", "refused"], reason: str) -> CommandResult:
        return CommandResult(
            command_id=command.id, gate_id=self.gate_id, ts=self._clock(), result=result, reason=reason[:200]
        )
