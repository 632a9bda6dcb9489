"""Running the long-lived services: config loaded and checked first, signals stop them cleanly."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

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


def run_edge(config: Path) -> int:
    from edge.config import EdgeConfig
    from edge.pipeline import EdgeNode

    cfg = load_config(EdgeConfig, config)
    stop = stop_on_signals()
    EdgeNode.build(cfg).run(stop)
    return 0


def run_collector(config: Path) -> int:
    from cloud.collector import Collector
    from cloud.config import CollectorConfig

    cfg = load_config(CollectorConfig, config)
    stop = stop_on_signals()
    Collector(cfg).run(stop)
    return 0


def run_dashboard(config: Path | None) -> int:
    from waitress import create_server

    from dashboard import create_app
    from dashboard.config import DashboardConfig

    cfg = load_config(DashboardConfig, config) if config else DashboardConfig()
    stop = stop_on_signals()
    app = create_app({"PARKGATE": cfg})
    server = create_server(app, host=cfg.host, port=cfg.port, threads=cfg.threads, ident="parkgate")
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    logger.info("dashboard serving on http://%s:%s/", cfg.host, server.effective_port)
    stop.wait()
    server.close()
    feed = app.extensions.get("parkgate.feed")
    if feed:
        feed.stop()
    return 0
