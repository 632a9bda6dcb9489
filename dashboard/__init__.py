"""The operator and public dashboard (Flask application factory)."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from werkzeug.exceptions import HTTPException

from cloud.config import CollectorConfig
from dashboard.config import DashboardConfig
from dashboard.live import LiveFeed, LiveState
from parkgate.settings import load_config


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app. ``test_config`` may hold ``PARKGATE`` (a DashboardConfig) and ``LIVE_FEED``
    (False to skip the MQTT subscription, e.g. when a test fills the LiveState itself).

    Blueprints, one per audience: ``public`` (overview, sign pages), ``api`` (JSON, public),
    ``auth`` (login/logout), ``ops`` and ``ops_api`` (operators: login required for everything
    under ``/ops/`` and ``/api/v1/ops/``, see dashboard/auth.py)."""
    app = Flask(__name__)
    app.config.from_mapping(PARKGATE=DashboardConfig(), LIVE_FEED=True, SSE_KEEPALIVE_S=15.0)
    if test_config:
        app.config.from_mapping(test_config)
    cfg: DashboardConfig = app.config["PARKGATE"]

    from dashboard import auth, i18n, nav, security
    from dashboard.users import UserStore

    security.configure(app, cfg)  # session key, cookie flags, security headers
    i18n.configure(app, cfg)  # zh (default) / en
    auth.configure(app, cfg, UserStore(cfg.database) if cfg.database else None)  # login, CSRF, limits
    app.context_processor(nav.context)  # header: nav links, user menu

    # the site as the collector knows it: lots, lists, screens, stations (None: not configured)
    app.extensions["parkgate.site"] = (
        load_config(CollectorConfig, cfg.collector_config) if cfg.collector_config else None
    )

    state = LiveState()
    app.extensions["parkgate.live"] = state
    if app.config["LIVE_FEED"]:
        feed = LiveFeed(cfg.mqtt, state, client_id=f"dashboard-{os.getpid()}")
        feed.start()
        app.extensions["parkgate.feed"] = feed

    from dashboard import api, ops, ops_api, public

    app.register_blueprint(public.bp)
    app.register_blueprint(api.bp)
    from dashboard import opendata  # drivers and open data: /api/v1/lots, forecasts, DATEX II

    app.register_blueprint(opendata.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(ops_api.bp)
    from dashboard import inspection, inspection_api, near  # stations, intruder alerts; lots near me

    app.register_blueprint(inspection.bp)
    app.register_blueprint(inspection_api.bp)
    app.register_blueprint(near.bp)
    from dashboard import lots, lots_api  # lot detail, live vehicle feed, gate health: pages and JSON

    app.register_blueprint(lots.bp)
    app.register_blueprint(lots_api.bp)
    from dashboard import commands, lists, ops_actions_api, plates, signs  # operator actions

    for module in (plates, lists, commands, signs, ops_actions_api):
        app.register_blueprint(module.bp)
    app.register_error_handler(HTTPException, api.http_error)
    from dashboard import openapi  # GET /api/v1/openapi.json; every declared operation's parameters checked

    openapi.configure(app)
    # plain availability reads answered from pre-encoded bytes in front of Flask (dashboard/api.py)
    app.wsgi_app = api.FastAvailability(  # type: ignore[method-assign]
        app.wsgi_app, api.availability_cache(app), security.fixed_headers(cfg)
    )
    app.jinja_env.globals["product_title"] = cfg.title
    return app


# The app's own MQTT clients, started when first needed: the live feed, the inspection watch
# (dashboard/inspection_feed.py), the remote-command link (dashboard/commands.py).
BACKGROUND = ("parkgate.feed", "parkgate.inspection.watch", "parkgate.ops.commands")


def stop_background(app: Flask) -> None:
    """Stop the MQTT clients the app started (a shutdown, the end of a test)."""
    for key in BACKGROUND:
        service = app.extensions.get(key)
        if service is not None:
            service.stop()


def site_config(app: Flask) -> CollectorConfig | None:
    """The collector's config (``collector_config``), or None when the dashboard was not given it."""
    site: CollectorConfig | None = app.extensions.get("parkgate.site")
    return site


def live_state(app: Flask) -> LiveState:
    state: LiveState = app.extensions["parkgate.live"]
    return state
