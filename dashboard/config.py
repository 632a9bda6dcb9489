"""The dashboard's config file (TOML).

Operators log in only when ``database`` names the collector's database (their accounts and the
audit trail live there, beside the events); without it the dashboard serves the public pages and
the JSON API, and the operator pages answer 503. Example::

    host = "0.0.0.0"
    database = "postgresql+psycopg://parkgate@db/parkgate"
    secret_key_file = "/var/lib/parkgate/dashboard-secret.key"
    behind_tls = true          # nginx terminates HTTPS in front: Secure cookies, HSTS
    trusted_proxies = 1        # ... and sets X-Forwarded-For/-Proto: client IPs for the login limit
    default_locale = "zh"
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import limits
from pydantic import Field, field_validator

from parkgate.settings import MqttSettings, Port, StrictModel


def default_secret_key_file() -> Path:
    """``$STATE_DIRECTORY/dashboard-secret.key`` under systemd (its ``StateDirectory=``), else
    ``$XDG_STATE_HOME/parkgate/dashboard-secret.key`` (``~/.local/state/...`` when unset)."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0]) / "dashboard-secret.key"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "parkgate" / "dashboard-secret.key"


class Place(StrictModel):
    """A named place drivers may type on the public "lots near me" page (no internet geocoding)."""

    name: str = Field(min_length=1, max_length=60, description="what a driver types, e.g. 江汉路步行街")
    lat: float = Field(ge=-90, le=90, description="latitude (WGS 84)")
    lon: float = Field(ge=-180, le=180, description="longitude (WGS 84)")


class DashboardConfig(StrictModel):
    host: str = Field("127.0.0.1", description="address to listen on")
    port: Port = Field(8080, description="HTTP port")
    threads: int = Field(16, ge=2, le=256, description="worker threads (each live page holds one)")
    title: str = Field("ParkGate", max_length=60, description="product name in the header")
    database: str | None = Field(
        None,
        min_length=1,
        description="SQLAlchemy URL of the collector's database (operator accounts, audit trail); "
        "None: no operator login, public pages only",
    )
    collector_config: Path | None = Field(
        None,
        description="the collector's config file (TOML): the lots, gates' lists, screens and inspection "
        "stations the operator pages show and act on; read once at start",
    )
    secret_key_file: Path = Field(
        default_factory=default_secret_key_file,
        description="file holding the key that signs session cookies; made (random, mode 0600) on first "
        "start if missing. Only read when `database` is set",
    )
    behind_tls: bool = Field(
        False, description="browsers reach the dashboard over HTTPS (directly or through a proxy)"
    )
    secure_cookies: bool | None = Field(
        None, description="mark cookies Secure (sent over HTTPS only); default: the value of behind_tls"
    )
    trusted_proxies: int = Field(
        0,
        ge=0,
        le=5,
        description="reverse proxies in front that set X-Forwarded-For/-Proto/-Host; 0 trusts none "
        "(the client address is the socket's)",
    )
    default_locale: Literal["zh", "en"] = Field(
        "zh", description="language of the pages until a visitor picks one (zh: Chinese, en: English)"
    )
    timezone: str = Field("Asia/Shanghai", description="time zone of the times shown on operator pages")
    session_hours: float = Field(
        12.0, gt=0, le=24 * 30, description="an operator's login lasts this long, then they log in again"
    )
    login_limit: str = Field(
        "5 per minute",
        description="login attempts allowed per client address and user name (Flask-Limiter syntax, "
        "e.g. '5 per minute; 20 per hour'); more answer 429",
    )
    login_limit_per_address: str = Field(
        "30 per minute",
        description="login attempts allowed per client address whatever the name (against guessing names)",
    )
    places: list[Place] = Field(
        default_factory=list,
        max_length=10_000,
        description="named places for the public /near page: [[places]] name, lat, lon (lot names work too)",
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings)

    @field_validator("login_limit", "login_limit_per_address")
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            limits.parse_many(value)
        except ValueError as err:
            raise ValueError(f"{err} (write e.g. '5 per minute' or '5/minute; 20/hour')") from None
        return value

    @field_validator("places")
    @classmethod
    def _places_unique(cls, value: list[Place]) -> list[Place]:
        names = [p.name.strip().casefold() for p in value]
        repeated = sorted({p.name for p in value if names.count(p.name.strip().casefold()) > 1})
        if repeated:
            raise ValueError(f"place names must be unique; repeated: {', '.join(repeated)}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as 'Asia/Shanghai')") from None
        return value

    @property
    def cookies_secure(self) -> bool:
        """Whether cookies carry the Secure flag: ``secure_cookies``, else ``behind_tls``."""
        return self.behind_tls if self.secure_cookies is None else self.secure_cookies
