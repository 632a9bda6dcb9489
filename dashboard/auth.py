"""Operator login: the login and logout pages, who is asking, and what they may do.

Everything under ``/ops/`` (pages) and ``/api/v1/ops/`` (JSON) needs a logged-in operator: one
``before_request`` guard checks the path, so a page added there later is protected without
anyone remembering a decorator. Anonymous requests get a redirect to the login page (pages) or a
JSON 401 in the API's error shape. On top, :func:`role_required` gates a view by role (403, and
the refusal is audited), :func:`require_lot` / :func:`require_station` by scope.

Login attempts are rate-limited (Flask-Limiter, in memory: one dashboard process) per client
address and name (``login_limit``) and per address (``login_limit_per_address``); a client over
the limit gets 429 and a page that says to wait. Every login, failed login and logout is written
to the audit trail. A new login starts a new session (nothing from before carries over).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf import CSRFProtect, FlaskForm
from werkzeug.wrappers import Response
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from dashboard.config import DashboardConfig
from dashboard.errors import OperatorsOff
from dashboard.users import (
    PASSWORD_MAX,
    AuditRecord,
    LoginRefused,
    Result,
    Role,
    User,
    UserStore,
    can_see_lot,
    can_see_station,
    role_at_least,
)

logger = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

OPS_PAGES = "/ops"
OPS_API = "/api/v1/ops"
F = TypeVar("F", bound=Callable[..., Any])


class LoginForm(FlaskForm):
    name = StringField(_l("User name"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=PASSWORD_MAX)])
    next = HiddenField()


class LogoutForm(FlaskForm):
    """Only the CSRF token: logging out is a POST, so another site cannot log an operator out."""


# -- who is asking --------------------------------------------------------------------------------
def user_store() -> UserStore | None:
    """The accounts store, or None when the dashboard has no database."""
    return cast(UserStore | None, current_app.extensions.get("parkgate.users"))


def operator() -> User:
    """The logged-in user (only inside views the guard or :func:`role_required` protect)."""
    user = current_user._get_current_object()  # the User, not Flask-Login's proxy
    if not isinstance(user, User):
        abort(401)
    return user


def client_ip() -> str:
    """The client's address (the proxy's ``X-Forwarded-For`` when ``trusted_proxies`` is set)."""
    return request.remote_addr or ""


def audit(
    action: str, *, target: str = "", detail: str = "", result: Result = "ok", user: str = ""
) -> AuditRecord | None:
    """One row of the audit trail for the current request (user: the logged-in operator)."""
    store = user_store()
    if store is None:
        return None
    name = user or (current_user.name if current_user.is_authenticated else "-")
    return store.audit(name, action, target=target, detail=detail, ip=client_ip(), result=result)


def _is_api() -> bool:
    return request.path.startswith("/api/")


def _unauthorized() -> ResponseReturnValue:
    if _is_api():
        from dashboard.api import error_response

        return error_response(401, "login required")
    target = request.full_path if request.query_string else request.path
    return redirect(url_for("auth.login", next=target))


def guard() -> ResponseReturnValue | None:
    """``before_request``: operator pages and API need a login (see the module's docstring)."""
    path = request.path
    if not (path in (OPS_PAGES, OPS_API) or path.startswith((OPS_PAGES + "/", OPS_API + "/"))):
        return None
    if user_store() is None:
        raise OperatorsOff()
    if not current_user.is_authenticated:
        return _unauthorized()
    return None


def role_required(role: Role) -> Callable[[F], F]:
    """Only users with ``role`` or a higher one; others get 403 and the refusal is audited."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return _unauthorized()
            user = operator()
            if not role_at_least(user, role):
                audit("access", target=request.path, detail=f"{request.method} needs {role}", result="denied")
                abort(403, description=f"this needs the {role} role; {user.name} is {user.role}")
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def require_lot(lot_id: str) -> None:
    """403 (audited) unless the operator's scope has this lot."""
    if not can_see_lot(operator(), lot_id):
        audit("access", target=f"lot:{lot_id}", detail=request.path, result="denied")
        abort(403, description=f"lot {lot_id!r} is outside your scope")


def require_station(station_id: str) -> None:
    """403 (audited) unless the operator's scope has this station."""
    if not can_see_station(operator(), station_id):
        audit("access", target=f"station:{station_id}", detail=request.path, result="denied")
        abort(403, description=f"station {station_id!r} is outside your scope")


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site, never another site."""
    default = url_for("ops.home")
    if not target or "\\" in target or any(ord(c) < 32 for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target


# -- views ------------------------------------------------------------------------------------------
@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    store = user_store()
    if store is None:
        raise OperatorsOff()
    form = LoginForm()
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(safe_next(request.args.get("next")))
        form.next.data = request.args.get("next", "")
        return render_template("login.html", form=form, error=None)
    if not form.validate_on_submit():
        return render_template("login.html", form=form, error=_("Enter your user name and password.")), 400
    name = (form.name.data or "").strip()
    try:
        user = store.authenticate(name, form.password.data or "")
    except LoginRefused as err:
        logger.warning("login refused for %r from %s: %s", name[:64], client_ip(), err.reason)
        audit("login", user=name, detail=err.reason, result="failed")
        error = _("Wrong user name or password.")
        return render_template("login.html", form=form, error=error), 401
    session.clear()  # a new session: no state (or fixed session id) from before the login
    login_user(user)
    session.permanent = True  # lasts session_hours (PERMANENT_SESSION_LIFETIME)
    audit("login", user=user.name)
    logger.info("%s logged in from %s", user.name, client_ip())
    return redirect(safe_next(form.next.data))


@bp.post("/logout")
def logout() -> Response:
    if current_user.is_authenticated:
        audit("logout")
        logout_user()
    session.clear()
    return redirect(url_for("public.index"))


# -- wiring -----------------------------------------------------------------------------------------
def _login_key() -> str:
    """Rate-limit key: client address and the name tried (case-folded, so 'Admin' is 'admin')."""
    name = (request.form.get("name") or "").strip().casefold()[:64]
    return f"{get_remote_address()}|{name}"


def configure(app: Flask, cfg: DashboardConfig, store: UserStore | None) -> None:
    """Login manager, the ``/ops`` guard, CSRF protection for every form, the login rate limit."""
    if store is not None:
        app.extensions["parkgate.users"] = store
    manager = LoginManager()
    manager.init_app(app)
    manager.session_protection = "basic"
    manager.user_loader(lambda session_id: store.load_session(session_id) if store else None)
    manager.unauthorized_handler(_unauthorized)
    app.before_request(guard)  # before CSRF: an anonymous POST is a 401, not a 400

    app.config.update(
        WTF_CSRF_TIME_LIMIT=int(cfg.session_hours * 3600),  # a form stays usable as long as the login
        RATELIMIT_HEADERS_ENABLED=True,  # Retry-After on a 429
    )
    CSRFProtect(app)
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://", strategy="moving-window")
    app.extensions["parkgate.limiter"] = limiter
    app.register_blueprint(bp)
    # Per app, not at import: each app has its own limiter and counters. The wrapped view is what
    # checks decorated limits, so it replaces the registered one.
    view = limiter.limit(lambda: cfg.login_limit, key_func=_login_key, methods=["POST"])(login)
    view = limiter.limit(lambda: cfg.login_limit_per_address, methods=["POST"])(view)
    app.view_functions["auth.login"] = view
