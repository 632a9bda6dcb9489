"""The public "lots near me" page for drivers (``/near``), mobile first, no login.

Where "me" is: the browser's position (the page asks for it only when the driver taps the button;
this page's ``Permissions-Policy`` allows geolocation for this site, every other page refuses it),
or a typed place. A typed place is looked up here, never on the internet: against the names (and
ids) of the lots that have a position, and the dashboard config's ``[[places]]`` (name, lat, lon),
ignoring case, width and spaces; an exact name wins, else a single partial match; several partial
matches are offered to pick from. ``?lat=&lon=`` also work, so a found place can be shared.

The page's script (static/near.js) then reads ``/api/v1/lots?lat&lon&radius_km`` (dashboard/
opendata.py: nearest first, free spaces, distance, data age, stale) and reads it again whenever a
shown lot changes on the live stream (``/api/v1/stream``), so the list stays current.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

from flask import Blueprint, Response, current_app, make_response, render_template, request, url_for
from flask_babel import gettext as _

from dashboard import live_state, site_config
from dashboard.config import DashboardConfig
from dashboard.opendata import DEFAULT_RADIUS_KM, MAX_RADIUS_KM

bp = Blueprint("near", __name__)

RADII_KM = (1.0, 2.0, 5.0, 10.0, 20.0)  # offered in the page's radius picker
QUERY_MAX = 60
CHOICES_MAX = 8
SUGGESTIONS = 8
# The site-wide policy (dashboard/security.py) refuses geolocation; this page needs it.
PERMISSIONS = "camera=(), microphone=(), geolocation=(self), payment=(), usb=()"
_IGNORED = re.compile(r"[\s·•\-_.,，。、()（）/]+")


@dataclass(frozen=True)
class Spot:
    """Somewhere a driver may type: a configured place or a lot with a position."""

    name: str
    lat: float
    lon: float
    kind: Literal["place", "lot"]
    lot_id: str | None = None


@dataclass(frozen=True)
class Resolution:
    spot: Spot | None
    choices: list[Spot] = field(default_factory=list)  # several matched: the driver picks


def normalize(text: str) -> str:
    """For matching: NFKC (full-width letters and digits become plain), case-folded, without
    spaces and separators, so 'jiang han lu' is 'jianghanlu' and 'Ｌ０１' is 'l01'."""
    return _IGNORED.sub("", unicodedata.normalize("NFKC", text).casefold())


def spots() -> list[Spot]:
    """Configured places first, then every lot with a position (live, else from the site config)."""
    cfg: DashboardConfig = current_app.config["PARKGATE"]
    out = [Spot(p.name, p.lat, p.lon, "place") for p in cfg.places]
    seen = set()
    for lot in sorted(live_state(current_app).lots.values(), key=lambda x: x.lot_id):
        if lot.lat is not None and lot.lon is not None:
            out.append(Spot(lot.name, lot.lat, lot.lon, "lot", lot.lot_id))
            seen.add(lot.lot_id)
    site = site_config(current_app)
    for cfg_lot in site.lots if site else []:
        if cfg_lot.id not in seen and cfg_lot.lat is not None and cfg_lot.lon is not None:
            out.append(Spot(cfg_lot.name, cfg_lot.lat, cfg_lot.lon, "lot", cfg_lot.id))
    return out


def resolve(text: str, candidates: list[Spot]) -> Resolution:
    """The spot a typed text means (see the module's docstring)."""
    query = normalize(text)
    if not query:
        return Resolution(None)

    def keys(spot: Spot) -> list[str]:
        return [normalize(spot.name)] + ([normalize(spot.lot_id)] if spot.lot_id else [])

    exact = [s for s in candidates if query in keys(s)]
    if exact:
        return Resolution(exact[0])
    partial = [s for s in candidates if any(query in k or (len(k) >= 2 and k in query) for k in keys(s))]
    partial.sort(key=lambda s: (s.kind != "place", len(s.name), s.name))
    if len(partial) == 1:
        return Resolution(partial[0])
    return Resolution(None, partial[:CHOICES_MAX])


def _coordinate(name: str, low: float, high: float) -> float:
    raw = request.args.get(name, "").strip()
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(_("%(name)s must be a number.", name=name)) from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(_("%(name)s must be from %(low)s to %(high)s.", name=name, low=low, high=high))
    return value


def _radius() -> tuple[float, str | None]:
    raw = request.args.get("radius_km", "").strip()
    if not raw:
        return DEFAULT_RADIUS_KM, None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= MAX_RADIUS_KM:
        error = _("The radius must be more than 0 and at most %(max)s km.", max=int(MAX_RADIUS_KM))
        return DEFAULT_RADIUS_KM, error
    return value, None


@bp.get("/near")
def page() -> Response:
    text = request.args.get("q", "").strip()[:QUERY_MAX]
    radius, error = _radius()
    spot: Spot | None = None
    choices: list[Spot] = []
    found = spots()
    if "lat" in request.args or "lon" in request.args:
        try:
            lat, lon = _coordinate("lat", -90, 90), _coordinate("lon", -180, 180)
            spot = Spot(text or _("Your location"), lat, lon, "place")
        except ValueError as err:
            error = str(err)
    elif text:
        resolution = resolve(text, found)
        spot, choices = resolution.spot, resolution.choices
        if spot is None and not choices:
            error = _(
                "No place or lot called “%(text)s” is known here. Try another name, or use your location.",
                text=text,
            )
    radii = sorted(set(RADII_KM) | {radius})
    html = render_template(
        "near.html",
        text=text,
        spot=spot,
        choices=choices,
        error=error,
        radius=radius,
        radii=radii,
        suggestions=[s.name for s in found][:SUGGESTIONS],
        api_url=url_for("opendata.lots"),
        stream_url=url_for("api.stream"),
    )
    response = make_response(html)
    response.headers["Permissions-Policy"] = PERMISSIONS
    return response
