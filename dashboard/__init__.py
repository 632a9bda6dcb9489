"""The operator and public dashboard (Flask application factory)."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from werkzeug.exceptions import HTTPException

from dashboard.config import DashboardConfig
from dashboard.live import LiveFeed, LiveState


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app. ``test_config`` may hold ``PARKGATE`` (a DashboardConfig) and ``LIVE_FEED``
    (False to skip the MQTT subscription, e.g. when a test fills the LiveState itself)."""
    app = Flask(__name__)
    app.config.from_mapping(PARKGATE=DashboardConfig(), LIVE_FEED=True, SSE_KEEPALIVE_S=15.0)
    if test_config:
        app.config.from_mapping(test_config)
    cfg: DashboardConfig = app.config["PARKGATE"]

    state = LiveState()
    app.extensions["parkgate.live"] = state
    if app.config["LIVE_FEED"]:
        feed = LiveFeed(cfg.mqtt, state, client_id=f"dashboard-{os.getpid()}")
        feed.start()
        app.extensions["parkgate.feed"] = feed

    from dashboard import api, public

    app.register_blueprint(public.bp)
    app.register_blueprint(api.bp)
    app.register_error_handler(HTTPException, api.http_error)
    app.jinja_env.globals["product_title"] = cfg.title
    return app


def live_state(app: Flask) -> LiveState:
    state: LiveState = app.extensions["parkgate.live"]
    return state
