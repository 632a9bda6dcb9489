"""How good is the free-space forecast (cloud/history.py)? Mean absolute error against "no change".

A synthetic lot, sampled every 5 minutes for some weeks: an office-district car park on weekdays
(fills 7-9 h, empties 17-19 h) and a shopping crowd at weekends, each day's demand scaled by a
random factor, plus AR(1) noise in cars (the queue at the barrier, one-off visitors). Over the
last week, every 15 minutes, the forecast for +30 and +60 minutes made from the history before
that moment is compared with what the lot really held then, and so is "no change" (the count
now). Prints one JSON line per horizon::

    python -m bench.forecast [--weeks 6] [--noise 6] [--day-spread 0.06] [--seed 1]

    {"horizon_min": 60, "points": 672, "mae_forecast": ..., "mae_daily_only": ...,
     "mae_no_change": ..., "ratio": mae_forecast / mae_no_change, "methods": {"weekly": 672}}

It is synthetic, so it shows that the method learns a repeating pattern and what the noise costs,
not how a particular real lot behaves; run it on a lot's real samples (``load_samples``) for that.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cloud.history import Method, Sample, Series, forecast

START = datetime(2026, 9, 7, tzinfo=UTC)  # a Monday; times are the lot's local clock for simplicity


def _rise(hour: float, centre: float, width: float) -> float:
    return 1 / (1 + math.exp(-(hour - centre) / width))


def profile(moment: datetime) -> float:
    """Share of the spaces occupied, by weekday and hour: office days, shopping weekends."""
    hour = moment.hour + moment.minute / 60
    if moment.weekday() < 5:
        level = 0.08 + 0.8 * _rise(hour, 8.0, 0.5) * (1 - _rise(hour, 18.0, 0.6))
        return level - 0.08 * math.exp(-(((hour - 12.5) / 0.7) ** 2))  # lunch trips
    return 0.05 + 0.6 * _rise(hour, 11.5, 0.8) * (1 - _rise(hour, 19.5, 0.8))


def synthetic_history(
    weeks: int = 6,
    *,
    capacity: int = 400,
    interval_min: int = 5,
    noise: float = 6.0,
    day_spread: float = 0.06,
    seed: int = 1,
) -> list[Sample]:
    """``weeks`` of samples of the synthetic lot (occupied spaces, clamped to 0..capacity)."""
    rng = random.Random(seed)
    step = timedelta(minutes=interval_min)
    samples: list[Sample] = []
    factors: dict[int, float] = {}
    wander = 0.0
    moment = START
    while moment < START + weeks * timedelta(days=7):
        day = (moment - START).days
        factor = factors.setdefault(day, rng.gauss(1.0, day_spread))
        wander = 0.9 * wander + rng.gauss(0.0, noise * math.sqrt(1 - 0.9**2))
        occupied = round(capacity * profile(moment) * factor + wander)
        samples.append(Sample(moment, min(max(occupied, 0), capacity)))
        moment += step
    return samples


def evaluate(
    samples: Sequence[Sample],
    capacity: int,
    horizons: Sequence[int] = (30, 60),
    *,
    days: int = 7,
    every_min: int = 15,
) -> list[dict[str, object]]:
    """MAE of free spaces over the last ``days`` of ``samples``: forecast, daily profile only, no change."""
    series = Series(samples)
    actual = {s.ts: s.occupied for s in samples}
    end = samples[-1].ts
    out = []
    for minutes in horizons:
        errors: dict[str, list[float]] = {"forecast": [], "daily_only": [], "no_change": []}
        methods: Counter[Method] = Counter()
        moment = end - timedelta(days=days)
        while moment + timedelta(minutes=minutes) <= end:
            now, later = actual.get(moment), actual.get(moment + timedelta(minutes=minutes))
            if now is not None and later is not None:
                truth = capacity - later
                made = forecast(series, moment, now, capacity, minutes)
                daily = forecast(series, moment, now, capacity, minutes, methods=("daily",))
                methods[made.method] += 1
                errors["forecast"].append(abs(made.free - truth))
                errors["daily_only"].append(abs(daily.free - truth))
                errors["no_change"].append(abs((capacity - now) - truth))
            moment += timedelta(minutes=every_min)
        mae = {name: statistics.fmean(values) for name, values in errors.items()}
        out.append(
            {
                "horizon_min": minutes,
                "points": len(errors["forecast"]),
                "mae_forecast": round(mae["forecast"], 2),
                "mae_daily_only": round(mae["daily_only"], 2),
                "mae_no_change": round(mae["no_change"], 2),
                "ratio": round(mae["forecast"] / mae["no_change"], 3),
                "methods": dict(methods),
            }
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forecast", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weeks", type=int, default=6, help="weeks of history, the last one evaluated (>= 2)"
    )
    parser.add_argument("--capacity", type=int, default=400)
    parser.add_argument("--noise", type=float, default=6.0, help="AR(1) noise, standard deviation in cars")
    parser.add_argument("--day-spread", type=float, default=0.06, help="day-to-day demand factor, std dev")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.weeks < 2:
        parser.error("--weeks must be at least 2 (one to learn from, one to evaluate)")
    samples = synthetic_history(
        args.weeks, capacity=args.capacity, noise=args.noise, day_spread=args.day_spread, seed=args.seed
    )
    for line in evaluate(samples, args.capacity):
        print(json.dumps(line | {"weeks": args.weeks, "noise": args.noise, "seed": args.seed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
