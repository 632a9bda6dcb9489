"""Error pages for people: the status, a sentence in the page's language, a way back.

The JSON API keeps its own shape (dashboard/api.py ``error_response``, messages in English for
programs); this is what a browser gets instead of Werkzeug's bare page.
"""

from __future__ import annotations

from flask import Response, make_response, render_template
from flask_babel import gettext as _
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, ServiceUnavailable


class OperatorsOff(ServiceUnavailable):
    """Operator pages asked for on a dashboard without a database (no accounts)."""

    description = "operator login is not set up: the dashboard config has no database"


def _texts(err: HTTPException) -> tuple[str, str]:
    if isinstance(err, CSRFError):
        return _("Form expired"), _(
            "This form has expired or did not come from this site. Go back, reload the page and try again."
        )
    if isinstance(err, RateLimitExceeded):
        seconds = err.limit.limit.get_expiry()
        return _("Too many attempts"), _("Too many attempts. Wait %(s)s seconds, then try again.", s=seconds)
    if isinstance(err, OperatorsOff):
        return _("Not set up"), _(
            "Operator login is not set up on this dashboard: its config has no database."
        )
    texts = {
        400: (_("Bad request"), _("The request could not be understood.")),
        401: (_("Login required"), _("Please log in.")),
        403: (_("Not allowed"), _("Your account may not do this.")),
        404: (_("Not found"), _("There is no page at this address.")),
        405: (_("Not allowed"), _("This address does not accept that kind of request.")),
        503: (_("Unavailable"), _("This part of the dashboard is not available right now.")),
    }
    return texts.get(err.code or 500, (_("Server error"), _("Something went wrong. Try again in a moment.")))


def error_page(err: HTTPException) -> Response:
    title, message = _texts(err)
    return make_response(render_template("error.html", status=err.code or 500, title=title, message=message))
