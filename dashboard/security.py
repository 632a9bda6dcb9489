"""What every response and every cookie gets: the session key, cookie flags, security headers.

Content-Security-Policy: scripts and styles come from this server only (``'self'``), never
inline — the templates hold no ``<script>`` code and no ``style=""`` attributes, parkgate.js sets
what it needs through the DOM. Server data for scripts travels in ``data-*`` attributes or a
``<script type="application/json">`` block, which is not executed. Nothing may frame the pages
(``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``), forms post only here, the live stream
and the API are same-origin (``connect-src 'self'``).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from datetime import timedelta
from pathlib import Path

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from dashboard.config import DashboardConfig
from parkgate.settings import ConfigError

logger = logging.getLogger(__name__)

KEY_BYTES = 48
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
HSTS = "max-age=31536000"  # only when behind_tls: a plain-HTTP install must not lock itself out
PRIVATE_PREFIXES = ("/ops", "/api/v1/ops", "/login")  # operator data: never kept by a cache


class SecretKeyError(ConfigError):
    """The session key file cannot be used; names the file and the fix (``parkgate dashboard``
    prints it and exits 78, like any config error)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"secret_key_file {path}", [problem])


def load_secret_key(path: Path) -> bytes:
    """The key in ``path``, made first (random, mode 0600, in a 0700 folder) if the file is missing.

    Two dashboards starting together make one key: the new file is written aside and linked into
    place, which fails for the second, which then reads the first one's. A key readable by other
    users is refused: anyone who can read it can forge an admin's session."""
    path = path.expanduser()
    if not path.exists():
        _create_key(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes().strip()
    except OSError as err:
        raise SecretKeyError(path, f"cannot read: {err.strerror or err}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretKeyError(
            path, f"other users may read it (mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    if len(data) < 32:
        raise SecretKeyError(
            path, f"holds {len(data)} bytes; at least 32 are needed (delete it to get a new one)"
        )
    return data


def _create_key(path: Path) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(KEY_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(aside, path)
            logger.info("made a new session key in %s", path)
        except FileExistsError:
            pass  # another dashboard made it first: use theirs
        finally:
            aside.unlink()
    except OSError as err:
        raise SecretKeyError(path, f"cannot make it: {err.strerror or err}") from None


def fixed_headers(cfg: DashboardConfig) -> list[tuple[str, str]]:
    """The headers every response gets, as a list made once: the availability fast path in front
    of Flask (dashboard/api.py ``FastAvailability``) sends these, as ``_headers`` below adds them."""
    return [*HEADERS.items(), *([("Strict-Transport-Security", HSTS)] if cfg.behind_tls else [])]


def configure(app: Flask, cfg: DashboardConfig) -> None:
    """Session key, cookie flags, trusted proxies and the response headers."""
    # Without a database there are no accounts, so nothing worth a lasting session: a key for this
    # process only (the language choice lives in a cookie of its own, unsigned).
    app.secret_key = load_secret_key(cfg.secret_key_file) if cfg.database else secrets.token_bytes(32)
    app.config.update(
        SESSION_COOKIE_NAME="parkgate_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=cfg.cookies_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=cfg.session_hours),
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=cfg.cookies_secure,
        PREFERRED_URL_SCHEME="https" if cfg.behind_tls else "http",
    )
    if cfg.trusted_proxies:
        n = cfg.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)  # type: ignore[method-assign]
    hsts = cfg.behind_tls

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if hsts:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        if request.path.startswith(PRIVATE_PREFIXES):
            response.headers["Cache-Control"] = "no-store"
        return response
