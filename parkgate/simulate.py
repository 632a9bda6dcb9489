"""``parkgate simulate``: a Wuhan-scale parking day replayed through the real broker and collector.

Wuhan's guidance system takes close to 2,000 car parks with 600,000 spaces, over 700,000
entry/exit records a day, and feeds 200+ roadside screens. This module makes such a city and
such a day, then sends the day's gate events the way the gates would, so the figures it prints
are those of the real path (Mosquitto, the collector, the database, retained screen content):

- :func:`make_city`: lots around Wuhan's districts with a skewed size mix (many small lots, a few
  large ones; capacities sum exactly to ``spaces``), a kind each (office, shopping, residential,
  hub: hospitals and stations), 1-4 gates by size (a small lot's single lane works both ways),
  and guidance screens showing the 2-4 lots nearest them with arrows by bearing.
- :func:`plan_day`: vehicles arrive over 24 h of simulated time along each kind's own curve
  (commuters at 8-9 h, shoppers from 10 h into the evening, residents home at 17-20 h, visitors
  through the day) and leave after a dwell drawn per kind, so the city's events show a night
  trough, a morning peak, a midday plateau and an evening peak. Each visit is one car (a valid
  mainland plate, 鄂A mostly) with an entry and, if it leaves before midnight, an exit; a lot
  that is full refuses (``deny``/``lot_full``), so occupancy stays within capacity. Exactly
  ``events`` events. The city starts the day as the database last counted it (empty when new).
- :func:`run`: starts Mosquitto and the collector(s) (bench/load.py, shared with ``bench
  ingest``), sends the plan from publisher processes paced by ``--speed``, reports progress on
  stderr, then checks the database (stored once, nothing lost, each lot's occupancy as planned)
  and every screen's retained content, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from bench.load import (
    ENTRY,
    EXIT,
    OPEN_EXIT,
    OPEN_SPACE,
    REFUSED_FULL,
    LatencyProbe,
    LoadError,
    PublishJob,
    ScreenWatch,
    Send,
    Stack,
    Tick,
    json_line,
    lot_occupancy,
    new_run_id,
    parse_host_port,
    percentile,
    run_publishers,
    running_stack,
    stored_counts,
)
from cloud.events_store import open_engine
from edge.plate_format import ALNUM, DIGITS, LETTERS
from parkgate.demo import write_toml

DAY_S = 86_400.0
MAX_CAPACITY = 100_000  # cloud.config.LotConfig's bound
MIN_DWELL_S = 300.0
MAX_DWELL_S = 3 * DAY_S
TIMEZONE = ZoneInfo("Asia/Shanghai")
REPEAT_CAR = 0.35  # share of arrivals by a car already seen today (and not parked elsewhere)
SCREEN_WAIT_S = 15.0  # how long the screens may take to show the final counts


# -- the city -------------------------------------------------------------------------------------


class LotKind(StrEnum):
    OFFICE = "office"
    SHOPPING = "shopping"
    RESIDENTIAL = "residential"
    HUB = "hub"  # hospitals, stations: busy all day, short stays


@dataclass(frozen=True)
class Flow:
    """One kind of visitor: when they arrive (relative weight per hour 0-23) and how long they stay."""

    name: str
    share: float  # of its lot kind's arrivals
    hours: tuple[float, ...]
    dwell_h: float  # median stay
    sigma: float  # spread of the stay (log-normal)


@dataclass(frozen=True)
class Profile:
    lot_share: float  # of the city's lots
    turnover: float  # relative arrivals per space
    word: str  # in lot names
    flows: tuple[Flow, ...]


# Arrivals per hour of the day (relative), hours 0-11 on the first line, 12-23 on the second.
COMMUTE = (0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 1.2, 4.5, 10, 7.5, 2.5, 1.2,
           1.2, 2.2, 1.2, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.2, 0.1, 0.1)  # fmt: skip
DAYTIME = (0.05, 0.02, 0.02, 0.02, 0.05, 0.2, 0.8, 2, 4, 5.5, 6, 5.5,
           5, 5.5, 5.5, 5.5, 5, 4.5, 3.5, 2.5, 1.5, 0.8, 0.4, 0.2)  # fmt: skip
SHOPPING = (0.3, 0.1, 0.05, 0.05, 0.05, 0.1, 0.2, 0.5, 1.2, 2.5, 5, 6.5,
            6.5, 6, 6, 6, 6.5, 7, 7.5, 7, 5, 3, 1.5, 0.7)  # fmt: skip
HOMEWARD = (0.8, 0.4, 0.2, 0.1, 0.1, 0.2, 0.5, 0.8, 0.8, 0.7, 0.7, 0.9,
            1.1, 0.9, 0.9, 1.4, 3, 6.5, 8.5, 7, 5, 3.5, 2, 1.2)  # fmt: skip
HUB = (0.3, 0.2, 0.1, 0.1, 0.2, 0.6, 1.5, 4, 6.5, 6.5, 6, 5.5,
       5, 5, 5, 5, 5, 5.5, 5, 4, 3, 2, 1.2, 0.6)  # fmt: skip

PROFILES: dict[LotKind, Profile] = {
    LotKind.OFFICE: Profile(0.28, 1.8, "商务区", (Flow("commuters", 0.8, COMMUTE, 9.0, 0.2),
                                                 Flow("visitors", 0.2, DAYTIME, 1.5, 0.6))),
    LotKind.SHOPPING: Profile(0.22, 1.2, "购物中心", (Flow("shoppers", 1.0, SHOPPING, 2.0, 0.5),)),
    LotKind.RESIDENTIAL: Profile(0.35, 0.8, "小区", (Flow("residents", 0.75, HOMEWARD, 11.0, 0.25),
                                                    Flow("visitors", 0.25, DAYTIME, 2.0, 0.6))),
    LotKind.HUB: Profile(0.15, 1.2, "医院站场", (Flow("travellers", 1.0, HUB, 1.5, 0.7),)),
}  # fmt: skip
KINDS = tuple(PROFILES)

# (district, lat, lon, share of the city's lots, spread in degrees)
DISTRICTS = (
    ("江岸", 30.600, 114.310, 0.12, 0.020), ("江汉", 30.600, 114.270, 0.12, 0.015),
    ("硚口", 30.580, 114.220, 0.08, 0.018), ("汉阳", 30.550, 114.220, 0.09, 0.025),
    ("武昌", 30.550, 114.320, 0.14, 0.022), ("青山", 30.630, 114.390, 0.06, 0.020),
    ("洪山", 30.500, 114.340, 0.12, 0.030), ("光谷", 30.480, 114.410, 0.10, 0.030),
    ("东西湖", 30.620, 114.140, 0.05, 0.030), ("蔡甸", 30.580, 114.030, 0.03, 0.030),
    ("江夏", 30.370, 114.320, 0.04, 0.035), ("黄陂", 30.880, 114.370, 0.03, 0.040),
    ("新洲", 30.840, 114.800, 0.01, 0.030), ("汉南", 30.310, 114.080, 0.01, 0.030),
)  # fmt: skip
PLACES = ("中山", "解放", "建设", "发展", "京汉", "武珞", "珞喻", "民族", "雄楚", "友谊",
          "和平", "鹦鹉", "沿江", "徐东", "中北", "汉正", "花桥", "后湖", "楚河", "东湖")  # fmt: skip
ROADS = ("解放大道", "中山大道", "建设大道", "发展大道", "京汉大道", "武珞路", "珞喻路", "民族大道",
         "雄楚大道", "友谊大道", "和平大道", "汉阳大道", "鹦鹉大道", "江汉路", "沿江大道", "徐东大街",
         "中北路", "光谷大道", "二环线", "三环线")  # fmt: skip


@dataclass(frozen=True)
class Gate:
    id: str
    lot: int  # index into City.lots
    direction: str  # entry, exit, or both (a small lot's single lane)


@dataclass(frozen=True)
class Lot:
    id: str
    name: str
    kind: LotKind
    capacity: int
    lat: float
    lon: float
    popularity: float  # how much busier than its size alone says
    entries: tuple[int, ...]  # gate indexes
    exits: tuple[int, ...]


@dataclass(frozen=True)
class Screen:
    id: str
    name: str
    lat: float
    lon: float
    lots: tuple[tuple[int, str], ...]  # (lot index, arrow)


@dataclass(frozen=True)
class City:
    lots: tuple[Lot, ...]
    gates: tuple[Gate, ...]
    screens: tuple[Screen, ...]

    @property
    def spaces(self) -> int:
        return sum(lot.capacity for lot in self.lots)

    def gate_table(self) -> list[tuple[str, str]]:
        """Gate index -> (gate_id, lot_id)."""
        return [(g.id, self.lots[g.lot].id) for g in self.gates]

    def screen_lots(self) -> dict[str, list[str]]:
        return {s.id: [self.lots[i].id for i, _arrow in s.lots] for s in self.screens}

    def collector_city(self) -> dict[str, Any]:
        """The ``lots`` and ``screens`` of a collector config serving this city."""
        return {
            "lots": [
                {"id": lot.id, "name": lot.name, "capacity": lot.capacity, "lat": lot.lat, "lon": lot.lon}
                for lot in self.lots
            ],
            "screens": [
                {
                    "id": s.id,
                    "name": s.name,
                    "lots": [{"lot_id": self.lots[i].id, "arrow": arrow} for i, arrow in s.lots],
                }
                for s in self.screens
            ],
        }


def make_city(lots: int, spaces: int, screens: int, *, seed: int = 1, gates: int | None = None) -> City:
    """A city of ``lots`` lots with ``spaces`` spaces in all and ``screens`` guidance screens.
    ``gates``: exactly this many gates (at least one per lot) instead of 1-4 by lot size."""
    if lots < 1 or spaces < lots or spaces > lots * MAX_CAPACITY:
        raise ValueError(f"{spaces} spaces cannot fill {lots} lots of 1 to {MAX_CAPACITY} spaces each")
    if gates is not None and gates < lots:
        raise ValueError(f"{gates} gates are too few for {lots} lots: each lot needs one")
    rng = np.random.default_rng([seed, 0])
    capacity = _capacities(rng, lots, spaces)
    kinds = rng.choice(len(KINDS), size=lots, p=_normalised([PROFILES[k].lot_share for k in KINDS]))
    district = rng.choice(len(DISTRICTS), size=lots, p=_normalised([d[3] for d in DISTRICTS]))
    popularity = rng.lognormal(0.0, 0.5, lots)
    offsets = rng.normal(0.0, 1.0, (lots, 2))
    places = rng.integers(0, len(PLACES), lots)
    per_lot = _gate_counts(capacity, gates)
    lot_list: list[Lot] = []
    gate_list: list[Gate] = []
    for i in range(lots):
        name, lat, lon, _share, spread = DISTRICTS[district[i]]
        kind = KINDS[kinds[i]]
        lot_id = f"L{i:04d}"
        entries, exits = _lot_gates(lot_id, i, int(per_lot[i]), gate_list)
        lot_list.append(
            Lot(
                id=lot_id,
                name=f"{name}{PLACES[places[i]]}{PROFILES[kind].word}停车场 P{i:04d}",
                kind=kind,
                capacity=int(capacity[i]),
                lat=round(float(lat + offsets[i, 0] * spread), 5),
                lon=round(float(lon + offsets[i, 1] * spread), 5),
                popularity=float(popularity[i]),
                entries=entries,
                exits=exits,
            )
        )
    return City(tuple(lot_list), tuple(gate_list), _screens(rng, lot_list, screens))


def _normalised(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return w / w.sum()


def _capacities(rng: np.random.Generator, lots: int, spaces: int) -> np.ndarray:
    """Log-normal sizes (median about 60 % of the mean, the largest ten times the median),
    at least 1 and at most MAX_CAPACITY each, summing exactly to ``spaces``."""
    weights = rng.lognormal(0.0, 1.0, lots)
    capacity = np.ones(lots, dtype=np.int64)
    left = spaces - lots
    while left > 0:
        room = MAX_CAPACITY - capacity
        w = np.where(room > 0, weights, 0.0)
        share = np.minimum(np.floor(w / w.sum() * left), room).astype(np.int64)
        if share.sum() == 0:  # the last few spaces: one each to the largest lots with room
            for i in np.argsort(-w)[:left]:
                capacity[i] += 1
            break
        capacity += share
        left -= int(share.sum())
    return capacity


def _gate_counts(capacity: np.ndarray, total: int | None) -> np.ndarray:
    """Gates per lot: 1 (a two-way lane) under 60 spaces, 2 under 400, 3 under 1,200, else 4;
    or ``total`` gates, one per lot and the rest by size."""
    if total is None:
        return np.select([capacity < 60, capacity < 400, capacity < 1200], [1, 2, 3], 4)
    counts = np.ones(len(capacity), dtype=np.int64)
    extra = total - len(capacity)
    if extra:
        raw = capacity / capacity.sum() * extra
        counts += np.floor(raw).astype(np.int64)
        for i in np.argsort(-(raw - np.floor(raw)))[: extra - int(np.floor(raw).sum())]:
            counts[i] += 1
    return counts


def _lot_gates(
    lot_id: str, lot: int, count: int, gates: list[Gate]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Add a lot's gates (half entries, rounded up); returns (entry gates, exit gates)."""
    if count == 1:
        gates.append(Gate(f"{lot_id}-io1", lot, "both"))
        return (len(gates) - 1,), (len(gates) - 1,)
    entries: list[int] = []
    exits: list[int] = []
    for k in range(count):
        into = k < (count + 1) // 2
        number = k + 1 if into else k + 1 - (count + 1) // 2
        gates.append(Gate(f"{lot_id}-{'in' if into else 'out'}{number}", lot, "entry" if into else "exit"))
        (entries if into else exits).append(len(gates) - 1)
    return tuple(entries), tuple(exits)


def _screens(rng: np.random.Generator, lots: list[Lot], count: int) -> tuple[Screen, ...]:
    """Screens near the big lots (an anchor lot chosen by size, the screen a few hundred metres
    away), each showing its 2-4 nearest lots with an arrow: ahead (up), left, right or behind
    (down) relative to the way the traffic passing it faces."""
    if not count:
        return ()
    lat = np.array([lot.lat for lot in lots])
    lon = np.array([lot.lon for lot in lots])
    size = np.array([lot.capacity for lot in lots], dtype=float)
    anchors = rng.choice(len(lots), size=count, replace=count > len(lots), p=size / size.sum())
    screens = []
    for n, anchor in enumerate(anchors):
        s_lat = float(lat[anchor] + rng.normal(0, 0.004))
        s_lon = float(lon[anchor] + rng.normal(0, 0.004))
        dy = lat - s_lat
        dx = (lon - s_lon) * math.cos(math.radians(s_lat))
        nearest = np.argsort(dx * dx + dy * dy)[: min(int(rng.integers(2, 5)), len(lots))]
        heading = float(rng.choice([0.0, 90.0, 180.0, 270.0]))
        shown = tuple((int(i), _arrow(math.degrees(math.atan2(dx[i], dy[i])) - heading)) for i in nearest)
        road = ROADS[n % len(ROADS)]
        screens.append(
            Screen(
                f"S{n:03d}", f"{road}诱导屏{n // len(ROADS) + 1}号", round(s_lat, 5), round(s_lon, 5), shown
            )
        )
    return tuple(screens)


def _arrow(bearing: float) -> str:
    """The arrow for a lot at ``bearing`` degrees from the way the traffic faces."""
    angle = (bearing + 180.0) % 360.0 - 180.0
    if -45.0 <= angle <= 45.0:
        return "up"
    if 45.0 < angle <= 135.0:
        return "right"
    if -135.0 <= angle < -45.0:
        return "left"
    return "down"


# -- plates ---------------------------------------------------------------------------------------

OTHER_PREFIXES = ("湘A", "豫A", "赣A", "皖A", "川A", "粤B", "京N", "沪A", "渝A", "陕A")


def make_plate(rng: random.Random) -> str:
    """A mainland plate as a Wuhan car park sees them: 鄂A (Wuhan) mostly, other Hubei cities and
    provinces too; about one in five a new-energy plate (鄂AD12345)."""
    roll = rng.random()
    if roll < 0.82:
        prefix = "鄂A"
    elif roll < 0.94:
        prefix = "鄂" + rng.choice("BCDEFGHJKLMNPQRS")
    else:
        prefix = rng.choice(OTHER_PREFIXES)
    if rng.random() < 0.22:
        return prefix + rng.choice("DF") + rng.choice(ALNUM) + "".join(rng.choices(DIGITS, k=4))
    chars = rng.choices(DIGITS, k=5)
    for i in rng.sample(range(5), k=rng.choice((0, 0, 1, 1, 2))):
        chars[i] = rng.choice(LETTERS)
    return prefix + "".join(chars)


# -- the day --------------------------------------------------------------------------------------


@dataclass
class DayPlan:
    """The day's events in time order, and what the city should look like after them."""

    sends: list[Send]  # (t in s from midnight, gate, direction, plate, decision), in time order
    initial: list[int]  # per lot, occupied at midnight
    final: list[int]  # per lot, occupied after the day
    visits: int = 0  # cars admitted
    refused: int = 0  # entries refused: lot full
    overnight: int = 0  # admitted cars still parked at midnight
    peak_occupancy_ratio: float = 0.0  # the city's fullest moment: occupied / spaces
    lots_full: int = 0  # lots that were full at some moment
    hourly: list[int] = field(default_factory=list)  # events per hour of the day


def plan_day(city: City, events: int, *, seed: int = 1, initial: Sequence[int] | None = None) -> DayPlan:
    """Exactly ``events`` events over 24 h. Arrivals are drawn (independently, so any first n of
    them are a fair sample) and replayed in time order against each lot's capacity; how many
    arrivals make ``events`` is found by a few replays, and the last few events are cars that
    come in late in the evening and stay the night."""
    start = [
        min(max(int(n), 0), lot.capacity)
        for n, lot in zip(initial or [0] * len(city.lots), city.lots, strict=True)
    ]
    rng = np.random.default_rng([seed, 1])
    times, lots, dwells = _draw_arrivals(rng, city, events)
    capacity = [lot.capacity for lot in city.lots]

    def count(n: int) -> int:
        order = np.argsort(times[:n], kind="stable")
        return _replay(times[order], lots[order], dwells[order], capacity, start).events

    arrivals = min(events, max(1, round(events / 1.9)))
    total = count(arrivals)
    tolerance = max(2, events // 10_000)
    for _ in range(12):
        if total == events or (events - tolerance <= total < events):
            break
        guess = min(events, max(0, round(arrivals * events / max(total, 1))))
        if guess == arrivals:
            guess = max(arrivals - 1, 0) if total > events else min(arrivals + 1, events)
        arrivals, total = guess, count(guess)
    while total > events:
        arrivals = max(0, arrivals - max(1, (total - events) // 2))
        total = count(arrivals)
    order = np.argsort(times[:arrivals], kind="stable")
    t, lot, dwell = times[order], lots[order], dwells[order]
    pads = events - total  # one event each: the car stays the night, or is refused
    last = float(t[-1]) if arrivals else 0.0
    t = np.concatenate([t, np.sort(rng.uniform(last, DAY_S, pads))])
    lot = np.concatenate([lot, _pick_lots(rng, city, pads)])
    dwell = np.concatenate([dwell, np.full(pads, DAY_S)])
    replay = _replay(t, lot, dwell, capacity, start, city=city, cars=random.Random(seed))
    assert len(replay.sends) == events, (len(replay.sends), events)
    replay.sends.sort(key=lambda s: (s[0], -s[2]))  # at the same instant, the exit first
    return _summarise(city, replay, start)


@dataclass
class _Replay:
    events: int = 0
    sends: list[Send] = field(default_factory=list)
    final: list[int] = field(default_factory=list)
    visits: int = 0
    refused: int = 0
    overnight: int = 0


def _pair_weights(city: City) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Flow]]:
    """Every (lot, flow) pair with its share of the day's arrivals."""
    flows = [flow for kind in KINDS for flow in PROFILES[kind].flows]
    index = {id(flow): n for n, flow in enumerate(flows)}
    pair_lot, pair_flow, weight = [], [], []
    for i, lot in enumerate(city.lots):
        profile = PROFILES[lot.kind]
        for flow in profile.flows:
            pair_lot.append(i)
            pair_flow.append(index[id(flow)])
            weight.append(lot.capacity * lot.popularity * profile.turnover * flow.share)
    return np.array(pair_lot), np.array(pair_flow), _normalised(weight), flows


def _draw_arrivals(rng: np.random.Generator, city: City, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` arrivals: (time of day in s, lot index, dwell in s), independent of each other."""
    pair_lot, pair_flow, weight, flows = _pair_weights(city)
    pairs = rng.choice(len(weight), size=n, p=weight)
    flow_of = pair_flow[pairs]
    times = np.empty(n)
    dwells = np.empty(n)
    for f, flow in enumerate(flows):
        mask = flow_of == f
        k = int(mask.sum())
        hours = rng.choice(24, size=k, p=_normalised(flow.hours))
        times[mask] = hours * 3600.0 + rng.random(k) * 3600.0
        dwells[mask] = np.clip(
            rng.lognormal(math.log(flow.dwell_h * 3600.0), flow.sigma, k), MIN_DWELL_S, MAX_DWELL_S
        )
    return times, pair_lot[pairs], dwells


def _pick_lots(rng: np.random.Generator, city: City, n: int) -> np.ndarray:
    pair_lot, _flow, weight, _flows = _pair_weights(city)
    return pair_lot[rng.choice(len(weight), size=n, p=weight)] if n else np.zeros(0, dtype=np.int64)


def _replay(
    times: np.ndarray,
    lots: np.ndarray,
    dwells: np.ndarray,
    capacity: list[int],
    start: list[int],
    *,
    city: City | None = None,
    cars: random.Random | None = None,
) -> _Replay:
    """Arrivals in time order against capacity: admitted (an exit follows if the car leaves
    before midnight) or refused when the lot is full. With ``city``, the events are made too:
    gates, and plates from a pool of cars (one not parked elsewhere may come again)."""
    out = _Replay()
    occupied = list(start)
    leaving: list[tuple[float, int, int]] = []  # (time, lot, car)
    plates: list[str] = []
    free_cars: list[int] = []
    seen: set[str] = set()
    record = city is not None and cars is not None
    for t, lot, dwell in zip(times.tolist(), lots.tolist(), dwells.tolist(), strict=True):
        while leaving and leaving[0][0] <= t:
            _t, gone, car = heapq.heappop(leaving)
            occupied[gone] -= 1
            free_cars.append(car)
        car = _car(cars, plates, free_cars, seen) if record else -1
        if occupied[lot] >= capacity[lot]:
            out.refused += 1
            out.events += 1
            if record:
                out.sends.append((t, _gate(cars, city, lot, ENTRY), ENTRY, plates[car], REFUSED_FULL))
                free_cars.append(car)  # it drives on
            continue
        occupied[lot] += 1
        out.visits += 1
        leaves = t + dwell
        if record:
            out.sends.append((t, _gate(cars, city, lot, ENTRY), ENTRY, plates[car], OPEN_SPACE))
        if leaves < DAY_S:
            out.events += 2
            heapq.heappush(leaving, (leaves, lot, car))
            if record:
                out.sends.append((leaves, _gate(cars, city, lot, EXIT), EXIT, plates[car], OPEN_EXIT))
        else:
            out.events += 1
            out.overnight += 1
    while leaving:
        _t, gone, _car_left = heapq.heappop(leaving)
        occupied[gone] -= 1
    out.final = occupied
    return out


def _car(rng: random.Random | None, plates: list[str], free_cars: list[int], seen: set[str]) -> int:
    """A car for the next arrival: one seen today and not parked now, or a new one."""
    assert rng is not None
    if free_cars and rng.random() < REPEAT_CAR:
        k = rng.randrange(len(free_cars))
        free_cars[k], free_cars[-1] = free_cars[-1], free_cars[k]
        return free_cars.pop()
    plate = make_plate(rng)
    while plate in seen:
        plate = make_plate(rng)
    seen.add(plate)
    plates.append(plate)
    return len(plates) - 1


def _gate(rng: random.Random | None, city: City | None, lot: int, direction: int) -> int:
    assert rng is not None and city is not None
    gates = city.lots[lot].entries if direction == ENTRY else city.lots[lot].exits
    return gates[0] if len(gates) == 1 else rng.choice(gates)


def _summarise(city: City, replay: _Replay, start: list[int]) -> DayPlan:
    """The plan with its occupancy figures, found by walking its events in order."""
    plan = DayPlan(replay.sends, start, replay.final, replay.visits, replay.refused, replay.overnight)
    occupied = list(start)
    lot_of = [g.lot for g in city.gates]
    capacity = [lot.capacity for lot in city.lots]
    full = {i for i, n in enumerate(occupied) if n >= capacity[i]}
    total = peak = sum(occupied)
    hourly = [0] * 24
    for t, gate, direction, _plate, decision in replay.sends:
        hourly[min(int(t // 3600), 23)] += 1
        lot = lot_of[gate]
        if decision == REFUSED_FULL:
            continue
        step = 1 if direction == ENTRY else -1
        occupied[lot] += step
        total += step
        if occupied[lot] >= capacity[lot]:
            full.add(lot)
        peak = max(peak, total)
    plan.peak_occupancy_ratio = round(peak / max(city.spaces, 1), 4)
    plan.lots_full = len(full)
    plan.hourly = hourly
    return plan


def split_by_lot(city: City, sends: Sequence[Send], publishers: int) -> list[list[Send]]:
    """The events per publisher, whole lots each (busiest lots first to the least loaded), each
    publisher's in time order."""
    per_lot = [0] * len(city.lots)
    lot_of = [g.lot for g in city.gates]
    for send in sends:
        per_lot[lot_of[send[1]]] += 1
    load = [(0, k) for k in range(publishers)]
    owner = [0] * len(city.lots)
    for lot in sorted(range(len(city.lots)), key=lambda i: -per_lot[i]):
        n, k = heapq.heappop(load)
        owner[lot] = k
        heapq.heappush(load, (n + per_lot[lot], k))
    shares: list[list[Send]] = [[] for _ in range(publishers)]
    for send in sends:
        shares[owner[lot_of[send[1]]]].append(send)
    return shares


# -- the command ----------------------------------------------------------------------------------


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of options, or None."""
    if args.spaces < args.lots:
        return f"--spaces ({args.spaces}) must be at least --lots ({args.lots}): every lot needs a space"
    if args.spaces > args.lots * MAX_CAPACITY:
        return f"--spaces ({args.spaces}) is more than {args.lots} lots of {MAX_CAPACITY:,} spaces can hold"
    if args.publishers > args.lots:
        return f"--publishers ({args.publishers}) cannot exceed --lots ({args.lots}): a lot has one publisher"
    if args.broker:
        try:
            parse_host_port(args.broker)
        except ValueError as err:
            return f"--broker: {err}"
    if args.broker and not args.config_only and (not args.db or args.db == "postgres"):
        return "--broker needs --db URL: the database its collector writes to, to check what it stored"
    if args.config_only and not args.workdir:
        return "--config-only needs --workdir: the folder to write the collector config into"
    return None


def day_start(day: date | None) -> tuple[date, float]:
    """The simulated day (default: yesterday in Wuhan, a day that has happened) and the epoch
    seconds of its midnight in Asia/Shanghai."""
    day = day or (datetime.now(TIMEZONE) - timedelta(days=1)).date()
    return day, datetime(day.year, day.month, day.day, tzinfo=TIMEZONE).timestamp()


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="parkgate-simulate-") as tmp:
        yield Path(tmp)


def _say(message: str) -> None:
    print(f"[simulate] {message}", file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    minutes = int(min(max(seconds, 0.0), DAY_S) // 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def run(args: argparse.Namespace) -> int:
    problem = check_args(args)
    if problem:
        print(f"parkgate simulate: {problem}", file=sys.stderr)
        return 2
    city = make_city(args.lots, args.spaces, args.screens, seed=args.seed)
    with _workdir(args.workdir) as work:
        if args.config_only:
            return _write_config(args, city, work)
        try:
            with running_stack(
                work, city=city.collector_city(), db=args.db, collectors=args.collectors, name="sim",
                broker=args.broker,
            ) as stack:  # fmt: skip
                return _simulate(args, city, stack)
        except LoadError as err:
            print(f"parkgate simulate: {err}", file=sys.stderr)
            return 1


def _write_config(args: argparse.Namespace, city: City, work: Path) -> int:
    """Only the collector config for this city (for --broker: start that collector with it)."""
    host, port = args.broker.rsplit(":", 1) if args.broker else ("127.0.0.1", "1883")
    config = write_toml(
        work / "collector.toml",
        {
            "name": "city",
            "database": args.db
            if args.db and args.db != "postgres"
            else f"sqlite:///{work / 'events.sqlite'}",
            "mqtt": {"host": host, "port": port},
            **city.collector_city(),
        },
    )
    json_line({"config": str(config), "lots": len(city.lots), "spaces": city.spaces, "gates": len(city.gates),
               "screens": len(city.screens)})  # fmt: skip
    return 0


def _simulate(args: argparse.Namespace, city: City, stack: Stack) -> int:
    engine = open_engine(stack.db_url)
    try:
        counted = lot_occupancy(engine)
    except SQLAlchemyError as err:  # a --db no collector has written to (yet)
        print(
            f"parkgate simulate: cannot read the lots in --db ({err.__class__.__name__}: "
            f"{getattr(err, 'orig', None) or err}); is its collector running?",
            file=sys.stderr,
        )
        return 1
    finally:
        engine.dispose()
    wrong = [lot.id for lot in city.lots if counted.get(lot.id, (lot.capacity, 0))[0] != lot.capacity]
    missing = [lot.id for lot in city.lots if lot.id not in counted]
    if wrong or missing:
        print(
            f"parkgate simulate: the collector writing to --db does not serve this city ({len(missing)} lots "
            f"missing, {len(wrong)} with another capacity, e.g. {(missing + wrong)[0]}); start it with the "
            "config that --config-only writes for the same --lots/--spaces/--screens/--seed",
            file=sys.stderr,
        )
        return 2
    day, midnight = day_start(args.date)
    started = time.monotonic()
    plan = plan_day(city, args.events, seed=args.seed, initial=[counted[lot.id][1] for lot in city.lots])
    kinds = {kind: sum(1 for lot in city.lots if lot.kind is kind) for kind in KINDS}
    _say(
        f"city: {len(city.lots):,} lots ({city.spaces:,} spaces; "
        + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        + f"), {len(city.gates):,} gates, {len(city.screens)} screens; day {day} ({TIMEZONE.key}): "
        f"{args.events:,} events, {plan.visits:,} visits, {plan.refused:,} refused (full), planned in "
        f"{time.monotonic() - started:.1f} s"
    )
    run_id = new_run_id()
    gates = city.gate_table()
    jobs = [
        PublishJob(
            stack.settings, k, gates, share, run_id, speed=args.speed, day_start=midnight, client_tag="sim"
        )
        for k, share in enumerate(split_by_lot(city, plan.sends, args.publishers))
    ]
    watch = ScreenWatch(stack.settings) if city.screens else None
    probe = LatencyProbe(stack.settings)
    try:
        result = run_publishers(jobs, stack, events=args.events, run_id=run_id, report=_progress(args.events))
        verdict = _verify(city, plan, stack, run_id, watch)
        latencies = sorted(probe.latencies(result.sent))
    finally:
        probe.stop()
        if watch:
            watch.stop()
    summary = {
        "lots": len(city.lots),
        "spaces": city.spaces,
        "events": args.events,
        "stored": verdict["stored"],
        "lost": args.events - verdict["stored"],
        "duplicated": verdict["duplicated"],
        "seconds": round(result.seconds, 2),
        "events_per_s": round(verdict["stored"] / max(result.seconds, 1e-9), 1),
        "sim_hours": round(plan.sends[-1][0] / 3600, 2) if plan.sends else 0.0,
        "speed": args.speed or "max",
        "occupancy_mismatches": verdict["mismatches"],
        "peak_occupancy_ratio": plan.peak_occupancy_ratio,
        "screens": verdict["screens"],
        "screens_wrong": verdict["wrong"],
        "screens_marked_stale": verdict["marked_stale"],
        "screen_updates": watch.updates if watch else 0,
        "gates": len(city.gates),
        "visits": plan.visits,
        "refused_full": plan.refused,
        "lots_full": plan.lots_full,
        "overnight": plan.overnight,
        "busiest_hour": max(range(24), key=lambda h: plan.hourly[h]),
        "gate_to_screen_p50_ms": percentile(latencies, 0.50),
        "gate_to_screen_p99_ms": percentile(latencies, 0.99),
        "publish_seconds": round(result.publish_seconds, 2),
        "collectors": 0 if args.broker else args.collectors,
        "publishers": args.publishers,
        "db": stack.db_url.split(":", 1)[0].split("+", 1)[0],
        "date": str(day),
        "seed": args.seed,
    }
    json_line(summary)
    ok = summary["lost"] == 0 and summary["duplicated"] == 0
    return 0 if ok and verdict["mismatches"] == 0 and verdict["wrong"] == 0 else 1


def _progress(events: int) -> Callable[[Tick], None]:
    def report(tick: Tick) -> None:
        _say(
            f"{_clock(tick.clock)} sim | sent {tick.sent:,}/{events:,} | stored {tick.stored:,} | "
            f"{tick.events_per_s:,.0f} ev/s | backlog {tick.backlog:,} | {tick.elapsed:.0f} s"
        )

    return report


def _verify(
    city: City, plan: DayPlan, stack: Stack, run_id: str, watch: ScreenWatch | None
) -> dict[str, int]:
    """What the database and the screens say after the day, against the plan."""
    engine = open_engine(stack.db_url)
    try:
        rows, distinct = stored_counts(engine, run_id)
        counted = lot_occupancy(engine)
    finally:
        engine.dispose()
    mismatched = [
        lot.id for lot, n in zip(city.lots, plan.final, strict=True) if counted.get(lot.id, (0, -1))[1] != n
    ]
    if mismatched:
        _say(f"occupancy differs from the plan in {len(mismatched)} lots, e.g. {mismatched[:5]}")
    wrong: list[str] = []
    if watch is not None:
        free = {lot_id: max(cap - occ, 0) for lot_id, (cap, occ) in counted.items()}
        deadline = time.monotonic() + SCREEN_WAIT_S
        while True:
            wrong = watch.differing(city.screen_lots(), free)
            if not wrong or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if wrong:
            _say(f"{len(wrong)} screens do not show the final counts, e.g. {wrong[:5]}")
    return {
        "stored": distinct,
        "duplicated": rows - distinct,
        "mismatches": len(mismatched),
        "screens": sum(1 for s in city.screens if watch is not None and s.id in watch.latest),
        "wrong": len(wrong),
        # the collector judges freshness by event time: a past day's counts are marked stale
        "marked_stale": sum(1 for state in (watch.states.values() if watch else ()) if state == "stale"),
    }
