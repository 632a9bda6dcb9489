"""The header's navigation: one list, in the order shown. A new page is one line here.

``role`` is the least role that may use the page (None: public, shown to everyone). An item whose
endpoint is not registered is left out, so a line can land before its page does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app, request, url_for
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from dashboard.users import Role, User, role_at_least


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: Any  # a lazy translation, rendered in the page's language
    role: Role | None = None


ROLE_LABELS = {"viewer": _l("Viewer"), "operator": _l("Operator"), "admin": _l("Administrator")}

NAV: list[NavItem] = [
    NavItem("public.index", _l("Overview")),
    NavItem("near.page", _l("Near me")),
    NavItem("ops.home", _l("Lots"), "viewer"),
    NavItem("lots.live", _l("Live vehicles"), "viewer"),
    NavItem("lots.gates", _l("Gate health"), "viewer"),
    NavItem("inspection.alerts", _l("Alerts"), "viewer"),
    NavItem("inspection.station_list", _l("Stations"), "viewer"),
    NavItem("plates.search", _l("Plate search"), "viewer"),
    NavItem("lists.index", _l("Lists"), "viewer"),
    NavItem("gates.gates", _l("Remote open"), "operator"),
    NavItem("signs.index", _l("Signs"), "viewer"),
    NavItem("ops.audit", _l("Audit trail"), "viewer"),
]


def nav_links() -> list[dict[str, Any]]:
    """The items this visitor may use: label, url and whether it is the current page."""
    user = current_user._get_current_object() if current_user else None
    links = []
    for item in NAV:
        if item.endpoint not in current_app.view_functions:
            continue
        if item.role is not None and not (isinstance(user, User) and role_at_least(user, item.role)):
            continue
        url = url_for(item.endpoint)
        active = request.endpoint == item.endpoint or (
            url not in ("/", "/ops/") and request.path.startswith(url)
        )
        links.append({"label": str(item.label), "url": url, "active": active})
    return links


def context() -> dict[str, Any]:
    """Template globals for the header: the links, role names, whether login exists at all."""
    return {
        "nav_links": nav_links,
        "role_labels": {role: str(label) for role, label in ROLE_LABELS.items()},
        "operators_enabled": "parkgate.users" in current_app.extensions,
    }
