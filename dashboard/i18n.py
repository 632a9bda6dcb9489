"""Languages: Chinese (default) and English, with Flask-Babel and gettext catalogues.

The message ids are English; ``translations/zh/LC_MESSAGES/messages.po`` translates them, and the
``en`` catalogue exists (empty translations fall back to the id) so a wording can be changed for
English readers without touching the code. The compiled ``.mo`` files are committed beside the
``.po`` files, so a clone, an editable install and a wheel all work without a build step;
``tests/test_auth.py`` fails while a ``.mo`` is older than its ``.po`` or a Chinese translation is
missing. README "Operators and languages" has the extract / update / compile commands.

Choice of language, first that applies: ``?lang=zh|en`` on any page (kept in a cookie for a
year), that cookie, the config's ``default_locale``. The browser's Accept-Language is not used:
the site decides its default, and one click switches.

Strings that parkgate.js shows (lot status, connection state, ages) are translated here too and
reach the script as JSON in the page (:data:`JS_MESSAGES`), so one catalogue holds every word.
The roadside sign page (``screen.html``) is not translated: a sign shows Chinese and English
together whoever looks at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, current_app, request
from flask_babel import Babel, get_locale
from flask_babel import lazy_gettext as _l

from dashboard.config import DashboardConfig

TRANSLATIONS = Path(__file__).resolve().parent / "translations"
LANGUAGES = {"zh": "中文", "en": "English"}  # each shown in its own language in the switch
HTML_LANG = {"zh": "zh-CN", "en": "en"}
LANG_COOKIE = "parkgate_lang"
LANG_COOKIE_DAYS = 365

JS_MESSAGES = {
    "status.ok": _l("Available"),
    "status.mid": _l("Limited"),
    "status.low": _l("Almost full"),
    "status.full": _l("Full"),
    "conn.connecting": _l("Connecting"),
    "conn.live": _l("Live"),
    "conn.reconnecting": _l("Reconnecting"),
    "age.now": _l("just now"),
    "age.s": _l("{n} s ago"),
    "age.min": _l("{n} min ago"),
    "age.h": _l("{n} h ago"),
    "age.d": _l("{n} d ago"),
    "gate.online": _l("online"),
    "gate.offline": _l("offline"),
    "gate.backlog": _l("backlog {n}"),
    "gate.barrier": _l("barrier: {state}"),
}


def select_locale() -> str:
    """The language of this request (see the module's docstring)."""
    for choice in (request.args.get("lang"), request.cookies.get(LANG_COOKIE)):
        if choice in LANGUAGES:
            return str(choice)
    cfg: DashboardConfig = current_app.config["PARKGATE"]
    return cfg.default_locale


def current_language() -> str:
    locale = get_locale()
    return locale.language if locale is not None and locale.language in LANGUAGES else "zh"


def lang_url(code: str) -> str:
    """This page with ``?lang=code`` (other query arguments kept)."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "lang"] + [("lang", code)]
    return f"{request.script_root}{request.path}?{urlencode(args)}"


def configure(app: Flask, cfg: DashboardConfig) -> None:
    app.config["BABEL_DEFAULT_LOCALE"] = cfg.default_locale
    app.config["BABEL_DEFAULT_TIMEZONE"] = cfg.timezone
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS)
    Babel(app, locale_selector=select_locale)
    secure = cfg.cookies_secure

    @app.after_request
    def _remember_choice(response: Response) -> Response:
        choice = request.args.get("lang")
        if choice in LANGUAGES and request.cookies.get(LANG_COOKIE) != choice:
            response.set_cookie(
                LANG_COOKIE, str(choice), max_age=LANG_COOKIE_DAYS * 86400, secure=secure,
                httponly=True, samesite="Lax",
            )  # fmt: skip
        return response

    @app.context_processor
    def _language() -> dict[str, Any]:
        lang = current_language()
        return {
            "lang": lang,
            "html_lang": HTML_LANG[lang],
            "languages": LANGUAGES,
            "lang_url": lang_url,
            "js_messages": {key: str(text) for key, text in JS_MESSAGES.items()},
        }
