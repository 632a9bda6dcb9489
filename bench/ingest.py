"""``parkgate bench ingest``: events through the real broker into the collector(s) and database.

The events are a city's day as ``parkgate simulate`` plans it (parkgate/simulate.py), so the
collector does the real work: ``--lots`` lots of realistic sizes (300 spaces on average) with
``--gates`` gates between them, cars with valid plates that enter and leave again, entries a
full lot refuses. They are sent in the day's order but stamped with the time of sending, at
``--rate`` events/s or as fast as the broker takes them, from ``--publishers`` processes (whole
lots each, every gate with its own outbox epoch and consecutive sequence numbers, QoS 1).
``--collectors K`` collector processes split the stream (MQTT 5 shared subscription) and write to
``--db`` (a SQLAlchemy URL, ``postgres`` for a temporary local server; a fresh SQLite file by
default). A subscriber times gate-to-screen latency: for each event, from its sending to the
arrival of the first availability update of its lot that counts it (``last_event_ts`` at or
after the event's time). The shared machinery is in bench/load.py. Prints progress on stderr and
one JSON line:

    {"events", "stored", "lost", "duplicated", "seconds", "events_per_s",
     "gate_to_screen_p50_ms", "gate_to_screen_p99_ms", ...}
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.load import (
    LatencyProbe,
    LoadError,
    PublishJob,
    Send,
    Tick,
    new_run_id,
    percentile,
    run_publishers,
    running_stack,
    stored_counts,
)
from cloud.events_store import open_engine
from parkgate.simulate import make_city, plan_day, split_by_lot

logger = logging.getLogger(__name__)

SPACES_PER_LOT = 300  # Wuhan: 600,000 spaces in 2,000 car parks
SEED = 1


def _progress(events: int) -> Callable[[Tick], None]:
    def report(tick: Tick) -> None:
        print(
            f"[bench ingest] sent {tick.sent}/{events} stored {tick.stored} ({tick.events_per_s:.0f} ev/s, "
            f"backlog {tick.backlog})",
            file=sys.stderr,
            flush=True,
        )

    return report


def run(
    *,
    events: int,
    collectors: int,
    db: str | None,
    rate: float | None,
    gates: int,
    lots: int,
    publishers: int = 1,
) -> int:
    problem = (
        f"--events must be at least 1 (got {events})" if events < 1
        else f"--lots must be at least 1 (got {lots})" if lots < 1
        else f"--gates ({gates}) must be at least --lots ({lots}): every lot needs a gate" if gates < lots
        else f"--publishers ({publishers}) cannot exceed --lots ({lots}): a lot has one publisher"
        if not 1 <= publishers <= lots
        else f"--rate must be positive (got {rate})" if rate is not None and rate <= 0
        else f"--collectors must be at least 1 (got {collectors})" if collectors < 1
        else None
    )  # fmt: skip
    if problem:
        print(f"parkgate bench ingest: {problem}", file=sys.stderr)
        return 2
    city = make_city(lots, lots * SPACES_PER_LOT, 0, seed=SEED, gates=gates)
    plan = plan_day(city, events, seed=SEED)
    # the day's order, the rate's pace: event n leaves at n / rate s (or at once), stamped "now"
    sends: list[Send] = [(n / rate if rate else 0.0, *send[1:]) for n, send in enumerate(plan.sends)]
    with tempfile.TemporaryDirectory(prefix="parkgate-ingest-") as tmp:
        try:
            with running_stack(
                Path(tmp), city=city.collector_city(), db=db, collectors=collectors, name="bench"
            ) as stack:
                probe = LatencyProbe(stack.settings)
                run_id = new_run_id()
                jobs = [
                    PublishJob(stack.settings, k, city.gate_table(), share, run_id,
                               speed=1.0 if rate else None, client_tag="bench")
                    for k, share in enumerate(split_by_lot(city, sends, publishers))
                ]  # fmt: skip
                try:
                    result = run_publishers(
                        jobs, stack, events=events, run_id=run_id, report=_progress(events)
                    )
                finally:
                    probe.stop()
                engine = open_engine(stack.db_url)
                try:
                    stored, distinct = stored_counts(engine, run_id)
                finally:
                    engine.dispose()
                db_url = stack.db_url
        except LoadError as err:
            print(f"parkgate bench ingest: {err}", file=sys.stderr)
            return 1
    latencies = sorted(probe.latencies(result.sent))
    seconds = result.seconds
    print(
        json.dumps(
            {
                "events": events,
                "stored": distinct,
                "lost": events - distinct,
                "duplicated": stored - distinct,
                "seconds": round(seconds, 2),
                "events_per_s": round(distinct / seconds, 1),
                "gate_to_screen_p50_ms": percentile(latencies, 0.50),
                "gate_to_screen_p99_ms": percentile(latencies, 0.99),
                "collectors": collectors,
                "db": db_url.split(":", 1)[0],
                "rate": rate,
                "publish_seconds": round(result.publish_seconds, 2),
                "publishers": publishers,
            }
        ),
        flush=True,
    )
    return 0 if distinct == events and stored == distinct else 1
