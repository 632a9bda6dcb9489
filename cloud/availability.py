"""Turning lot states into the retained messages that screens, drivers and gates read.

:func:`lot_availability` and :func:`screen_content` are pure: lot states, the data's ages and the
operators' overrides in, messages out (the rules are in cloud/screens.py). :class:`Signs` is the
collector's side of it: it keeps the freshness of every lot and the overrides in force, renders
with them, and says which lots and screens must be published again because their data turned
stale or fresh, or an override began or ended.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from cloud.config import CollectorConfig, LotConfig, ScreenConfig
from cloud.events_store import LotState
from cloud.screens import (
    Freshness,
    Override,
    OverrideKey,
    active_overrides,
    effective_mode,
    screen_row,
    screen_summary,
)
from protocol import LotAvailability, ScreenContent
from protocol.messages import utc_now

logger = logging.getLogger(__name__)


def lot_availability(
    lot: LotState,
    cfg: LotConfig | None = None,
    *,
    data_age_s: float | None = None,
    stale: bool = False,
    now: datetime | None = None,
) -> LotAvailability:
    """The lot's retained availability; ``cfg`` adds its position and stale limit."""
    return LotAvailability(
        lot_id=lot.id,
        name=lot.name,
        capacity=lot.capacity,
        occupied=lot.occupied,
        free=lot.free,
        ts=now or utc_now(),
        last_event_ts=lot.last_event_ts,
        stale=stale,
        data_age_s=None if data_age_s is None else round(data_age_s, 1),
        stale_after_s=cfg.stale_after_s if cfg else None,
        lat=cfg.lat if cfg else None,
        lon=cfg.lon if cfg else None,
    )


def screen_content(
    screen: ScreenConfig,
    lots: Mapping[str, LotState],
    *,
    ages: Mapping[str, float | None] | None = None,
    limits: Mapping[str, float] | None = None,
    overrides: Mapping[OverrideKey, Override] | None = None,
    now: datetime | None = None,
) -> ScreenContent:
    """One screen's retained content. ``ages`` (seconds since each lot was confirmed, None: never)
    and ``limits`` (each lot's stale_after_s) make rows stale; without ``ages`` freshness is not
    judged. ``overrides``: the operators' modes in force."""
    overrides = overrides or {}
    rows = []
    for item in screen.lots:
        lot = lots[item.lot_id]
        age = ages.get(lot.id) if ages is not None else None
        limit = limits.get(lot.id) if limits is not None else None
        stale = ages is not None and (age is None or (limit is not None and age > limit))
        mode = effective_mode(overrides, screen.id, lot.id)
        rows.append(
            screen_row(screen, item, lot, mode=mode, data_age_s=age, stale=stale, stale_after_s=limit)
        )
    whole = overrides.get((screen.id, None))
    screen_mode = whole.mode if whole is not None else "auto"
    text, state = screen_summary(rows, screen_mode)
    known = [row.data_age_s for row in rows if row.data_age_s is not None]
    return ScreenContent(
        screen_id=screen.id,
        name=screen.name,
        ts=now or utc_now(),
        rows=rows,
        text=text,
        state=state,
        mode=screen_mode,
        data_age_s=max(known) if known else None,
    )


class Signs:
    """The collector's view for rendering: each lot's freshness and the overrides in force."""

    def __init__(self, cfg: CollectorConfig, engine: Engine) -> None:
        self.cfg = cfg
        self.engine = engine
        self.lot_cfgs = {lot.id: lot for lot in cfg.lots}
        self.freshness = Freshness(cfg.lots)
        self.overrides: dict[OverrideKey, Override] = active_overrides(engine)
        self._unreadable = False  # overrides could not be read at the last try (logged once)

    def availability(self, lot: LotState, now: datetime | None = None) -> LotAvailability:
        """The lot's availability as it is now; remembers the staleness published."""
        now = now or utc_now()
        self.freshness.seed([lot])  # an event another collector stored confirms the count too
        stale = self.freshness.is_stale(lot.id, now)
        self.freshness.published(lot.id, stale)
        return lot_availability(
            lot, self.lot_cfgs.get(lot.id), data_age_s=self.freshness.age(lot.id, now), stale=stale, now=now
        )

    def content(
        self, screen: ScreenConfig, lots: Mapping[str, LotState], now: datetime | None = None
    ) -> ScreenContent:
        now = now or utc_now()
        shown = [item.lot_id for item in screen.lots]
        self.freshness.seed(lots[lot_id] for lot_id in shown)
        return screen_content(
            screen,
            lots,
            ages={lot_id: self.freshness.age(lot_id, now) for lot_id in shown},
            limits=self.freshness.limits,
            overrides=self.overrides,
            now=now,
        )

    def reload_overrides(self, now: datetime | None = None) -> set[str]:
        """Re-read the overrides in force (set from the command line or another collector, or
        expired); returns the screens whose overrides changed."""
        fresh = active_overrides(self.engine, now)
        changed = {
            key[0]
            for key in fresh.keys() | self.overrides.keys()
            if fresh.get(key) != self.overrides.get(key)
        }
        self.overrides = fresh
        return changed

    def due(self, now: datetime | None = None) -> tuple[set[str], list[ScreenConfig]]:
        """Lots whose data turned stale or fresh since published, and the screens showing them or
        whose overrides changed: what to publish again."""
        now = now or utc_now()
        try:
            changed_screens = self.reload_overrides(now)
            self._unreadable = False
        except SQLAlchemyError as err:  # the database is away: the overrides read last stay in force
            if not self._unreadable:
                logger.warning("cannot read screen overrides, keeping those read last: %s", err)
            self._unreadable, changed_screens = True, set()
        lots = self.freshness.flipped(now)
        screens = [
            s for s in self.cfg.screens if s.id in changed_screens or any(i.lot_id in lots for i in s.lots)
        ]
        return lots, screens
