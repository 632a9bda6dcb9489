"""Operator login, roles, scopes, CSRF, the login rate limit, security headers, the audit trail and
the two languages: the Flask app on a real SQLite database, and once the real ``parkgate
dashboard`` process (waitress) on a free port against a real broker."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from dashboard import create_app, live_state
from dashboard.config import DashboardConfig
from dashboard.users import UserStore
from parkgate.broker import free_port
from parkgate.cli import main
from parkgate.demo import write_toml
from parkgate.settings import ConfigError, MqttSettings
from protocol import LotAvailability, Topics, encode
from protocol.messages import utc_now
from tests.mqtt_helpers import publish_raw
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
TRANSLATIONS = REPO / "dashboard" / "translations"
PASSWORDS = {
    "boss": "boss-password-1",
    "olga": "olga-password-1",
    "vera": "vera-password-1",
    "sam": "sam-password-1",
}
EVIL = "<script>alert(1)</script>"
SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy")


def lot(lot_id: str, name: str | None = None, free: int = 7) -> LotAvailability:
    return LotAvailability(
        lot_id=lot_id, name=name or f"lot {lot_id}", capacity=10, occupied=10 - free, free=free, ts=utc_now()
    )


def make_app(tmp_path: Path, **settings: object) -> Flask:
    cfg = DashboardConfig(
        database=f"sqlite:///{tmp_path / 'events.sqlite'}",
        secret_key_file=tmp_path / "state" / "secret.key",
        **settings,
    )
    return create_app({"PARKGATE": cfg, "LIVE_FEED": False, "TESTING": True})


def users(app: Flask) -> UserStore:
    store: UserStore = app.extensions["parkgate.users"]
    return store


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with the schema and three accounts, made once (argon2 is slow on purpose) and
    copied for each test: an admin (every lot), an operator and a viewer scoped to lot L1."""
    path = tmp_path_factory.mktemp("seeded") / "events.sqlite"
    store = UserStore(f"sqlite:///{path}")
    store.add_user("boss", PASSWORDS["boss"], "admin")
    store.add_user("olga", PASSWORDS["olga"], "operator", lots="L1", stations="ST1")
    store.add_user("vera", PASSWORDS["vera"], "viewer", lots=["L1"])
    store.close()
    return path


@pytest.fixture
def app(tmp_path: Path, seeded: Path) -> Flask:
    """The dashboard on a copy of the seeded database; lots L1 and L2 live."""
    shutil.copy(seeded, tmp_path / "events.sqlite")
    app = make_app(tmp_path)
    live_state(app).put(lot("L1", "江汉路"))
    live_state(app).put(lot("L2", "汉街"))
    return app


def form_token(html: str) -> str:
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert found, "no CSRF token in the form"
    return found.group(1)


def meta_token(client: FlaskClient) -> str:
    html = client.get("/ops/").get_data(as_text=True)
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert found, "no CSRF meta tag for a logged-in page"
    return found.group(1)


def login(client: FlaskClient, name: str, password: str | None = None, **extra: str) -> TestResponse:
    token = form_token(client.get("/login").get_data(as_text=True))
    data = {"name": name, "password": password or PASSWORDS[name], "csrf_token": token, **extra}
    return client.post("/login", data=data)


def logged_in(app: Flask, name: str) -> FlaskClient:
    client = app.test_client()
    assert login(client, name).status_code == 302
    return client


def note(client: FlaskClient, text: str, lot_id: str | None = None, token: str | None = None) -> TestResponse:
    headers = {"X-CSRFToken": token} if token else {}
    return client.post("/api/v1/ops/notes", json={"text": text, "lot_id": lot_id}, headers=headers)


# -- anonymous --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/ops/", "/ops/audit", "/ops", "/ops/a-page-not-built-yet"])
def test_anonymous_operator_pages_redirect_to_login(app: Flask, path: str) -> None:
    resp = app.test_client().get(path)
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/ops/whoami"), ("GET", "/api/v1/ops/lots"), ("GET", "/api/v1/ops/audit"),
     ("POST", "/api/v1/ops/notes"), ("GET", "/api/v1/ops/not-built-yet")],
)  # fmt: skip
def test_anonymous_operator_api_gets_json_401(app: Flask, method: str, path: str) -> None:
    resp = app.test_client().open(path, method=method, json={"text": "x"})
    assert resp.status_code == 401
    assert resp.get_json() == {"error": {"status": 401, "message": "login required"}}


def test_public_pages_stay_public(app: Flask) -> None:
    client = app.test_client()
    for path in ("/", "/screens/S1", "/api/v1/availability", "/healthz", "/login"):
        assert client.get(path).status_code == 200, path


# -- logging in and out -----------------------------------------------------------------------------
def test_login_then_logout_each_audited(app: Flask) -> None:
    client = app.test_client()
    resp = login(client, "olga")
    assert resp.status_code == 302 and resp.headers["Location"] == "/ops/"
    assert client.get("/api/v1/ops/whoami").get_json() == {
        **users(app).user("olga").to_json(),  # type: ignore[union-attr]
        "name": "olga", "role": "operator", "lots": ["L1"], "stations": ["ST1"],
    }  # fmt: skip
    token = meta_token(client)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/api/v1/ops/whoami").status_code == 401
    trail = users(app).audit_trail(user="olga")
    assert [(r.action, r.result, r.ip) for r in trail] == [
        ("logout", "ok", "127.0.0.1"),
        ("login", "ok", "127.0.0.1"),
    ]


def test_wrong_password_unknown_name_and_disabled_account_are_refused_and_audited(app: Flask) -> None:
    client = app.test_client()
    resp = login(client, "olga", "not-her-password")
    assert resp.status_code == 401
    assert "用户名或密码错误" in resp.get_data(as_text=True)
    assert client.get("/api/v1/ops/whoami").status_code == 401
    assert login(client, "nobody", "whatever-password").status_code == 401
    users(app).set_active("vera", False)
    assert login(client, "vera").status_code == 401
    failed = [(r.user, r.detail) for r in users(app).audit_trail(action="login") if r.result == "failed"]
    assert failed == [("vera", "inactive"), ("nobody", "unknown_user"), ("olga", "wrong_password")]


def test_login_goes_back_to_the_page_asked_for_but_never_off_site(app: Flask) -> None:
    assert login(app.test_client(), "olga", next="/ops/audit").headers["Location"] == "/ops/audit"
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        assert login(app.test_client(), "boss", next=target).headers["Location"] == "/ops/", target


def test_new_password_or_disabled_account_ends_open_sessions(app: Flask) -> None:
    client = logged_in(app, "olga")
    assert client.get("/ops/").status_code == 200
    users(app).set_password("olga", "another-password-2")
    assert client.get("/ops/").status_code == 302
    client = logged_in(app, "vera")
    users(app).set_active("vera", False)
    assert client.get("/api/v1/ops/whoami").status_code == 401


# -- rate limit -------------------------------------------------------------------------------------
def test_login_rate_limit_per_address_and_name_answers_429(app: Flask) -> None:
    client = app.test_client()
    for _ in range(5):  # login_limit: 5 per minute
        assert login(client, "olga", "guess-guess-guess").status_code == 401
    resp = login(client, "olga")  # even the right password, now
    assert resp.status_code == 429
    assert "尝试次数过多" in resp.get_data(as_text=True)
    assert int(resp.headers["Retry-After"]) > 0
    # a spoofed X-Forwarded-For does not reset the count (no proxy is trusted by default)
    headers = {"X-Forwarded-For": "203.0.113.9"}
    token = form_token(client.get("/login").get_data(as_text=True))
    data = {"name": "olga", "password": PASSWORDS["olga"], "csrf_token": token}
    assert client.post("/login", data=data, headers=headers).status_code == 429
    assert login(client, "boss").status_code == 302  # another name from the same address still may


def test_login_rate_limit_per_address_whatever_the_name(tmp_path: Path) -> None:
    app = make_app(tmp_path, login_limit="100 per minute", login_limit_per_address="3 per minute")
    client = app.test_client()
    for n in range(3):
        assert login(client, f"name{n}", "guess-guess-guess").status_code == 401
    token = form_token(client.get("/login").get_data(as_text=True))
    data = {"name": "name9", "password": "guess-guess-guess", "csrf_token": token}
    resp = client.post("/login", data=data, headers={"Accept": "application/json"})
    assert resp.status_code == 429
    assert resp.get_json()["error"]["status"] == 429


def test_bad_rate_limit_setting_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="couldn't parse rate limit string 'often'"):
        DashboardConfig(login_limit="often")


# -- CSRF, cookies, headers -------------------------------------------------------------------------
def test_posts_without_csrf_token_get_400(app: Flask) -> None:
    client = app.test_client()
    client.get("/login")
    resp = client.post("/login", data={"name": "olga", "password": PASSWORDS["olga"]})
    assert resp.status_code == 400
    assert "表单已失效" in resp.get_data(as_text=True)
    assert client.get("/api/v1/ops/whoami").status_code == 401  # not logged in
    resp = client.post("/login", data={"name": "olga", "password": PASSWORDS["olga"], "csrf_token": "forged"})
    assert resp.status_code == 400

    client = logged_in(app, "olga")
    assert client.post("/logout").status_code == 400
    assert client.get("/api/v1/ops/whoami").status_code == 200  # still logged in
    resp = note(client, "no token")
    assert resp.status_code == 400 and resp.get_json()["error"]["status"] == 400
    assert note(client, "with the header token", token=meta_token(client)).status_code == 201


def test_session_cookie_flags(app: Flask, tmp_path: Path) -> None:
    cookie = login(app.test_client(), "olga").headers["Set-Cookie"]
    assert cookie.startswith("parkgate_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie

    tls = make_app(tmp_path / "tls", behind_tls=True)
    users(tls).add_user("olga", PASSWORDS["olga"], "operator")
    resp = tls.test_client().get("/login", base_url="https://dash.example")
    assert "Secure" in resp.headers["Set-Cookie"] and "HttpOnly" in resp.headers["Set-Cookie"]
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "Secure" in tls.test_client().get("/?lang=en").headers["Set-Cookie"]  # the language cookie too


def test_security_headers_on_every_response(app: Flask) -> None:
    client = logged_in(app, "boss")
    for path in ("/", "/screens/S1", "/healthz", "/api/v1/availability", "/static/parkgate.js", "/nothing",
                 "/ops/", "/ops/audit", "/api/v1/ops/whoami", "/login"):  # fmt: skip
        resp = client.get(path)
        resp.close()  # the static file
        for header in SECURITY_HEADERS:
            assert header in resp.headers, (path, header)
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert (
            resp.headers["X-Frame-Options"] == "DENY" and resp.headers["X-Content-Type-Options"] == "nosniff"
        )
    assert client.get("/ops/").headers["Cache-Control"] == "no-store"
    stream = client.get("/api/v1/stream", buffered=False)
    assert (
        stream.headers["Content-Type"].startswith("text/event-stream")
        and "Content-Security-Policy" in stream.headers
    )
    stream.close()


def test_pages_have_nothing_the_csp_would_block(app: Flask) -> None:
    """No inline script code, no style attributes, no event-handler attributes in any page."""
    client = logged_in(app, "boss")
    for path in ("/", "/screens/S1", "/ops/", "/ops/audit", "/nothing", "/?lang=en"):
        html = client.get(path).get_data(as_text=True)
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, (path, tag)
        assert not re.search(r"\sstyle=", html), path
        assert not re.search(r"\son[a-z]+=", html), path


# -- escaping, roles, scopes ------------------------------------------------------------------------
def test_script_in_a_lot_name_a_plate_note_or_a_login_name_is_escaped(app: Flask) -> None:
    live_state(app).put(lot("L1", EVIL))
    login(app.test_client(), EVIL, "whatever-password")  # a failed login: the name lands in the trail
    client = logged_in(app, "boss")
    assert note(client, f"plate {EVIL} turned away", "L1", meta_token(client)).status_code == 201
    for path in ("/ops/", "/ops/audit", "/"):
        html = client.get(path).get_data(as_text=True)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
        assert EVIL not in html, path


def test_viewer_cannot_take_an_operator_action(app: Flask) -> None:
    viewer = logged_in(app, "vera")
    resp = note(viewer, "opened the barrier by hand", "L1", meta_token(viewer))
    assert resp.status_code == 403
    assert resp.get_json()["error"] == {
        "status": 403,
        "message": "this needs the operator role; vera is viewer",
    }
    denied = users(app).audit_trail(user="vera", action="access")
    assert [(r.result, r.target) for r in denied] == [("denied", "/api/v1/ops/notes")]
    operator = logged_in(app, "olga")
    resp = note(operator, "opened the barrier by hand", "L1", meta_token(operator))
    assert resp.status_code == 201
    assert resp.get_json()["user"] == "olga" and resp.get_json()["target"] == "lot:L1"


def test_user_scoped_to_lot_a_does_not_see_lot_b(app: Flask) -> None:
    client = logged_in(app, "olga")
    html = client.get("/ops/").get_data(as_text=True)
    assert 'id="ops-lot-L1"' in html and "江汉路" in html
    assert 'id="ops-lot-L2"' not in html and "汉街" not in html
    assert [x["lot_id"] for x in client.get("/api/v1/ops/lots").get_json()["lots"]] == ["L1"]
    assert client.get("/api/v1/ops/lots/L1").status_code == 200
    resp = client.get("/api/v1/ops/lots/L2")
    assert resp.status_code == 403 and resp.get_json()["error"]["message"] == "lot 'L2' is outside your scope"
    assert note(client, "a note on L2", "L2", meta_token(client)).status_code == 403
    boss = logged_in(app, "boss")
    assert [x["lot_id"] for x in boss.get("/api/v1/ops/lots").get_json()["lots"]] == ["L1", "L2"]


def test_scoped_lot_without_data_is_listed_and_stale_is_marked(app: Flask) -> None:
    users(app).add_user("sam", PASSWORDS["sam"], "viewer", lots="L1,L9")
    old = lot("L1").model_copy(update={"ts": utc_now().replace(year=2020)})
    live_state(app).put(old)
    client = logged_in(app, "sam")
    html = client.get("/ops/").get_data(as_text=True)
    row = re.search(r'<tr id="ops-lot-L1" class="is-stale">.*?</tr>', html, re.S)
    assert row and "数据过期" in row.group(0)
    assert 'id="ops-lot-L9"' in html and "暂无数据" in html


def test_audit_page_admin_sees_everyone_others_their_own(app: Flask) -> None:
    logged_in(app, "olga")
    viewer = logged_in(app, "vera")
    page = viewer.get("/ops/audit").get_data(as_text=True)
    assert page.count("<tr class=") == 1 and ">olga<" not in page  # vera's own login only
    assert viewer.get("/ops/audit?user=olga").get_data(as_text=True).count("<tr class=") == 1
    boss = logged_in(app, "boss")
    page = boss.get("/ops/audit").get_data(as_text=True)
    assert ">olga<" in page and ">vera<" in page and ">boss<" in page
    only = boss.get("/ops/audit?user=olga").get_data(as_text=True)
    assert ">olga<" in only and ">vera<" not in only
    assert [r["user"] for r in boss.get("/api/v1/ops/audit").get_json()["rows"]] == ["boss", "vera", "olga"]
    assert {r["user"] for r in viewer.get("/api/v1/ops/audit?user=boss").get_json()["rows"]} == {"vera"}


# -- languages --------------------------------------------------------------------------------------
def test_chinese_by_default_english_on_switch(app: Flask) -> None:
    client = app.test_client()
    html = client.get("/").get_data(as_text=True)
    assert '<html lang="zh-CN">' in html and "城市概览" in html and "City overview" not in html
    resp = client.get("/?lang=en")
    html = resp.get_data(as_text=True)
    assert '<html lang="en">' in html and "City overview" in html and "城市概览" not in html
    assert "parkgate_lang=en" in resp.headers["Set-Cookie"]
    assert "Operator login" in client.get("/login").get_data(as_text=True)  # the choice stays
    assert "Available" in client.get("/").get_data(as_text=True)
    assert '"status.ok": "Available"' in client.get("/").get_data(as_text=True)  # parkgate.js texts too
    assert "城市概览" in client.get("/?lang=zh").get_data(as_text=True)
    assert "城市概览" in client.get("/?lang=xx").get_data(as_text=True)  # unknown: the cookie's (zh)


def test_default_language_is_a_setting(tmp_path: Path) -> None:
    app = make_app(tmp_path, default_locale="en")
    assert "City overview" in app.test_client().get("/").get_data(as_text=True)


def test_catalogues_are_complete_and_compiled() -> None:
    """Every string marked in the code is in both catalogues (and nothing else is), has a Chinese
    translation, and each committed .mo file is the compilation of its .po (README "Operators and
    languages": extract, update, translate, compile)."""

    def key(msgid: object) -> str:  # a plural entry's id is (singular, plural)
        return msgid if isinstance(msgid, str) else cast("tuple[str, ...]", msgid)[0]

    def text(string: object) -> tuple[str, ...]:  # a plural entry's translation is one per form
        return tuple(string) if isinstance(string, list | tuple) else (str(string or ""),)

    method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
    keywords = {"_": None, "_l": None, "gettext": None, "ngettext": (1, 2)}
    found = {key(entry[2]) for entry in extract_from_dir(REPO / "dashboard", method_map, keywords=keywords)}
    assert len(found) > 50
    for lang in ("zh", "en"):
        with (TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po").open("rb") as f:
            po = [m for m in read_po(f) if m.id]
        with (TRANSLATIONS / lang / "LC_MESSAGES" / "messages.mo").open("rb") as f:
            compiled = {key(m.id): text(m.string) for m in read_mo(f) if m.id}
        ids = {key(m.id) for m in po}
        assert found - ids == set(), f"{lang}: marked in the code, not in the catalogue"
        assert ids - found == set(), f"{lang}: in the catalogue, no longer in the code"
        for m in po:
            if any(text(m.string)):
                assert compiled.get(key(m.id)) == text(m.string), f"{lang}: the .mo is older than the .po"
        if lang == "zh":
            assert [m.id for m in po if not any(text(m.string))] == [], "no Chinese for these"


# -- without a database, and the session key -------------------------------------------------------
def test_without_a_database_only_the_public_pages_work() -> None:
    app = create_app({"LIVE_FEED": False, "TESTING": True})
    client = app.test_client()
    assert client.get("/").status_code == 200
    assert "工作人员登录" not in client.get("/").get_data(as_text=True)
    assert client.get("/ops/").status_code == 503
    assert "尚未开通工作人员登录" in client.get("/login").get_data(as_text=True)
    assert client.get("/api/v1/ops/whoami").get_json()["error"]["status"] == 503


def test_session_key_file_is_made_private_and_kept(app: Flask, tmp_path: Path) -> None:
    key = tmp_path / "state" / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    client = logged_in(app, "olga")
    again = make_app(tmp_path)  # a restarted dashboard: same key, the session still holds
    cookie = client.get_cookie("parkgate_session")
    assert cookie is not None
    other = again.test_client()
    other.set_cookie("parkgate_session", cookie.value)
    assert other.get("/api/v1/ops/whoami").get_json()["name"] == "olga"
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="other users may read it"):
        make_app(tmp_path)


# -- the users command ------------------------------------------------------------------------------
def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str, stdin: str = ""
) -> tuple[int, list[dict[str, object]], str]:
    """``parkgate users ARGS`` in this process: (exit status, JSON lines on stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["users", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_users_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_toml(tmp_path / "dashboard.toml", {"database": f"sqlite:///{tmp_path / 'events.sqlite'}"})
    cfg = ["--config", str(config)]
    code, out, _ = run_cli(monkeypatch, capsys, "add", "王伟", "--role", "operator", "--lots", "L1,L2",
                           "--password-stdin", *cfg, stdin="a-good-password\n")  # fmt: skip
    assert (
        code == 0
        and out[0]["name"] == "王伟"
        and out[0]["lots"] == ["L1", "L2"]
        and out[0]["stations"] == "*"
    )
    assert "password" not in json.dumps(out) and "argon2" not in json.dumps(out)
    code, _, err = run_cli(monkeypatch, capsys, "add", "王伟", "--role", "viewer", "--password-stdin", *cfg,
                           stdin="a-good-password\n")  # fmt: skip
    assert code == 1 and "already exists" in err
    code, _, err = run_cli(monkeypatch, capsys, "add", "x y", "--role", "viewer", "--password-stdin", *cfg,
                           stdin="a-good-password\n")  # fmt: skip
    assert code == 2 and "user name 'x y'" in err
    code, _, err = run_cli(monkeypatch, capsys, "add", "ann", "--role", "viewer", "--password-stdin", *cfg,
                           stdin="short\n")  # fmt: skip
    assert code == 2 and "password too short" in err
    code, _, err = run_cli(monkeypatch, capsys, "add", "ann", "--role", "viewer", "--lots", "L 1",
                           "--password-stdin", *cfg, stdin="a-good-password\n")  # fmt: skip
    assert code == 2 and "'L 1' is not an id" in err
    with pytest.raises(SystemExit) as usage:
        main(["users", "add", "ann", "--role", "boss", *cfg])
    assert usage.value.code == 2
    code, _, _ = run_cli(
        monkeypatch, capsys, "passwd", "王伟", "--password-stdin", *cfg, stdin="a-new-password\n"
    )
    assert code == 0
    code, _, err = run_cli(
        monkeypatch, capsys, "passwd", "ghost", "--password-stdin", *cfg, stdin="a-new-password\n"
    )
    assert code == 1 and "no user 'ghost'" in err
    code, out, _ = run_cli(
        monkeypatch, capsys, "disable", "王伟", "--database", f"sqlite:///{tmp_path / 'events.sqlite'}"
    )
    assert code == 0 and out[0]["active"] is False
    code, out, _ = run_cli(monkeypatch, capsys, "list", *cfg)
    assert code == 0 and [u["name"] for u in out] == ["王伟"]

    store = UserStore(f"sqlite:///{tmp_path / 'events.sqlite'}")
    assert [(r.action, r.target) for r in store.audit_trail()] == [
        ("user.disable", "王伟"), ("user.passwd", "王伟"), ("user.add", "王伟"),
    ]  # fmt: skip
    store.set_active("王伟", True)
    assert store.authenticate("王伟", "a-new-password").name == "王伟"
    store.close()
    code, _, err = run_cli(
        monkeypatch, capsys, "list", "--config", str(write_toml(tmp_path / "none.toml", {}))
    )
    assert code == 78 and "has no database" in err


# -- the real server --------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path: Path, mqtt_settings: MqttSettings) -> Iterator[int]:
    """``parkgate dashboard --config FILE`` (waitress) on a free port; yields the port."""
    database = f"sqlite:///{tmp_path / 'events.sqlite'}"
    store = UserStore(database)
    store.add_user("olga", PASSWORDS["olga"], "operator", lots="L1")
    store.close()
    topics = Topics(mqtt_settings.topic_root)
    for lot_id, name in (("L1", "江汉路"), ("L2", "汉街")):
        publish_raw(mqtt_settings, topics.lot_availability(lot_id), encode(lot(lot_id, name)), retain=True)
    port = free_port()
    mqtt = mqtt_settings.model_dump(mode="json", exclude_none=True)
    config = write_toml(
        tmp_path / "dashboard.toml",
        {"port": port, "database": database, "secret_key_file": tmp_path / "secret.key", "mqtt": mqtt},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "parkgate", "dashboard", "--config", str(config)],
        stderr=subprocess.PIPE, env=dict(os.environ, PARKGATE_LOG_LEVEL="WARNING"),
    )  # fmt: skip
    try:

        def lots_known() -> bool:
            try:
                status, _, body = request(port, "GET", "/healthz")
            except OSError:
                return False
            return status == 200 and json.loads(body)["lots"] == 2

        wait_until(lots_known, 30, "the dashboard serving both lots")
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()


def request(
    port: int, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read().decode()
    finally:
        conn.close()


def cookie_of(headers: http.client.HTTPMessage) -> str:
    return next(h for h in headers.get_all("Set-Cookie") or [] if h.startswith("parkgate_session="))


@pytest.mark.integration
def test_real_server_login_scope_and_headers(served: int) -> None:
    status, headers, body = request(served, "GET", "/api/v1/ops/whoami")
    assert status == 401 and json.loads(body)["error"]["status"] == 401
    status, headers, body = request(served, "GET", "/ops/")
    assert status == 302 and headers["Location"].endswith("/login?next=/ops/")
    status, headers, body = request(served, "GET", "/login")
    assert status == 200 and all(h in headers for h in SECURITY_HEADERS) and "工作人员登录" in body
    session = cookie_of(headers).split(";")[0]
    form = f"name=olga&password={PASSWORDS['olga']}&csrf_token={form_token(body)}"
    post_headers = {"Cookie": session, "Content-Type": "application/x-www-form-urlencoded"}
    status, headers, _ = request(served, "POST", "/login", form, post_headers)
    assert status == 302 and headers["Location"] == "/ops/"
    cookie = cookie_of(headers)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    status, headers, body = request(served, "GET", "/ops/", headers={"Cookie": cookie.split(";")[0]})
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert 'id="ops-lot-L1"' in body and "江汉路" in body and 'id="ops-lot-L2"' not in body
    status, _, body = request(served, "POST", "/login", "name=olga&password=x", post_headers)
    assert status == 400  # no CSRF token


# -- in a real browser ------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
@pytest.mark.integration
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed (deploy/setup.sh --dev)")
def test_in_chromium_login_form_language_switch_and_api_post_under_the_csp(app: Flask) -> None:
    """Log in through the form, switch to English with the header's link, post a note from the
    page's script with its CSRF token; the browser reports no Content-Security-Policy violation."""
    from tests.browser_helpers import serve

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    console: list[str] = []
    with serve(app, threads=4) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(locale="zh-CN")
        page.on("console", lambda msg: console.append(msg.text))
        page.goto(url + "/ops/audit")
        assert page.url.startswith(url + "/login?next=")
        page.fill("#name", "olga")
        page.fill("#password", PASSWORDS["olga"])
        page.click("button[type=submit]")
        page.wait_for_url(url + "/ops/audit")
        sync_api.expect(page.locator("h1")).to_have_text("操作日志")
        page.click('a.lang[lang="en"]')
        sync_api.expect(page.locator("h1")).to_have_text("Audit trail")
        status = page.evaluate(
            "ParkGate.api.postJSON('/api/v1/ops/notes', {text: 'sign S1 dark', lot_id: 'L1'})"
            ".then(function (r) { return r.status; })"
        )
        assert status == 201
        page.goto(url + "/")
        sync_api.expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
        sync_api.expect(page.locator("#conn .conn-label")).to_have_text("Live")
        browser.close()
    assert [r.detail for r in users(app).audit_trail(action="note")] == ["sign S1 dark"]
    assert not [text for text in console if "Content Security Policy" in text], console
