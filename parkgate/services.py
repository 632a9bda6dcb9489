"""Running the long-lived services: config loaded and checked first, signals stop them cleanly."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from parkgate import systemd
from parkgate.settings import load_config

logger = logging.getLogger(__name__)


def stop_on_signals() -> threading.Event:
    """An Event set by SIGINT or SIGTERM; the handlers do nothing else."""
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        logger.info("%s received, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def supervise(
    stop: threading.Event, ready: str, healthy: Callable[[], bool], status: Callable[[], str]
) -> None:
    """Tell systemd the service is ready, then ping its watchdog while ``healthy()`` holds.

    Outside systemd (no $NOTIFY_SOCKET) this does nothing. A service whose worker threads died
    stops pinging, and systemd restarts it (``WatchdogSec`` in deploy/systemd/).
    """
    systemd.notify_ready(ready)
    interval = systemd.watchdog_interval()
    if interval is None:
        return

    def loop() -> None:
        while not stop.wait(interval):
            if healthy():
                systemd.watchdog_ping()
            else:
                logger.error(
                    "a worker thread has stopped; withholding the watchdog ping so systemd restarts us"
                )
            systemd.notify_status(status())

    threading.Thread(target=loop, name="watchdog", daemon=True).start()


def run_edge(config: Path) -> int:
    from edge.config import EdgeConfig
    from edge.pipeline import EdgeNode

    cfg = load_config(EdgeConfig, config)
    stop = stop_on_signals()
    node = EdgeNode.build(cfg)
    supervise(
        stop,
        f"gate {cfg.gate_id} starting",
        healthy=node.healthy,
        status=lambda: f"{node.stats.events} events, backlog {node.outbox.backlog()[0]}",
    )
    node.run(stop)
    systemd.notify_stopping()
    return 0


def run_collector(config: Path) -> int:
    import gc

    from cloud.collector import Collector
    from cloud.config import CollectorConfig

    cfg = load_config(CollectorConfig, config)
    stop = stop_on_signals()
    collector = Collector(cfg)
    # What start-up made (the city's configuration, the models, SQLAlchemy's tables) lives as long
    # as the process: out of the collector's sight, a full collection walks only what batches made
    # (one had stalled a batch by ~100 ms, a p99 spike of gate-to-screen latency).
    gc.freeze()
    supervise(
        stop,
        f"collector {cfg.name} starting",
        healthy=collector.healthy,
        status=lambda: (
            f"{collector.stored} stored, {collector.duplicates} repeats, {sum(collector.rejected.values())} refused"
        ),
    )
    collector.run(stop)
    systemd.notify_stopping()
    return 0


def run_dashboard(config: Path | None) -> int:
    """The dashboard behind waitress, whose I/O thread answers the plain availability reads itself
    from their pre-encoded bytes instead of passing them to a worker thread (dashboard/api.py
    ``waitress_server``): per read a fifth of the CPU, so one process serves drivers' apps and signs
    polling a city (README "The JSON API"). Everything else, the live streams too, runs on the
    ``threads`` workers."""
    import gc

    from dashboard import create_app, stop_background
    from dashboard.api import stop_server, waitress_server
    from dashboard.config import DashboardConfig

    cfg = load_config(DashboardConfig, config) if config else DashboardConfig()
    stop = stop_on_signals()
    app = create_app({"PARKGATE": cfg})
    # What start-up made lives as long as the process: out of the collector's sight, so a full
    # collection while serving walks what requests made, not the ~100,000 objects of the app.
    gc.freeze()
    server = waitress_server(app, host=cfg.host, port=cfg.port, threads=cfg.threads, ident="parkgate")
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    logger.info("dashboard serving on http://%s:%s/", cfg.host, server.effective_port)
    supervise(stop, "dashboard serving", healthy=thread.is_alive, status=lambda: "serving")
    stop.wait()
    systemd.notify_stopping()
    stop_server(server, thread)
    stop_background(app)
    return 0
