"""Turning lot states into the retained messages that screens, drivers and gates read."""

from __future__ import annotations

from collections.abc import Mapping

from cloud.config import ScreenConfig
from cloud.events_store import LotState
from protocol import LotAvailability, ScreenContent, ScreenRow
from protocol.messages import utc_now


def lot_availability(lot: LotState) -> LotAvailability:
    return LotAvailability(
        lot_id=lot.id,
        name=lot.name,
        capacity=lot.capacity,
        occupied=lot.occupied,
        free=lot.free,
        ts=utc_now(),
        last_event_ts=lot.last_event_ts,
    )


def screen_content(screen: ScreenConfig, lots: Mapping[str, LotState]) -> ScreenContent:
    rows = []
    for item in screen.lots:
        lot = lots[item.lot_id]
        rows.append(
            ScreenRow(
                lot_id=lot.id,
                label=item.label or lot.name[:40],
                arrow=item.arrow,
                free=lot.free,
                capacity=lot.capacity,
                full=lot.free == 0,
            )
        )
    return ScreenContent(screen_id=screen.id, name=screen.name, ts=utc_now(), rows=rows)
