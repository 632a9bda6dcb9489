"""Shared pieces of the browser tests (Debian's Chromium driven by Playwright): the marks that skip
them without Chromium, one way to launch it, the dashboard behind waitress on a free port, and
logging an operator in through the form.

Playwright and waitress are imported only when used, so a test module still skips cleanly (its own
``pytest.importorskip``) where they are not installed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flask import Flask
    from playwright.sync_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(__file__).parent / "artifacts"
OPERATOR = "olga"
PASSWORD = "olga-password-1"

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed (deploy/setup.sh --dev)"
    ),
]


@contextmanager
def chromium(args: Sequence[str] = CHROMIUM_ARGS) -> Iterator[Browser]:
    """Debian's Chromium, headless, closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=list(args))
        yield browser
        browser.close()


@contextmanager
def chromium_page(width: int, height: int, args: Sequence[str] = CHROMIUM_ARGS) -> Iterator[Page]:
    """One page of a fresh Chromium, in Chinese, ``width`` x ``height``."""
    with chromium(args) as browser:
        yield browser.new_page(viewport={"width": width, "height": height}, locale="zh-CN")


@contextmanager
def serve(app: Flask, threads: int = 8) -> Iterator[str]:
    """``app`` behind waitress on a free loopback port; yields its base URL; closes the server and
    stops the app's MQTT clients after."""
    from waitress import create_server

    from dashboard import stop_background
    from dashboard.api import stop_server

    server = create_server(app, host="127.0.0.1", port=0, threads=threads)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"  # type: ignore[union-attr]
    finally:
        stop_server(server, thread)
        stop_background(app)


def add_operator(database: str, **scope: str) -> None:
    """The operator the tests log in as (OPERATOR / PASSWORD), with ``lots=`` or ``stations=``;
    hashed with cheap argon2 settings, so seeding and logging in are quick."""
    from argon2 import PasswordHasher

    from dashboard.users import UserStore

    users = UserStore(database, hasher=PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1))
    users.add_user(OPERATOR, PASSWORD, "operator", **scope)
    users.close()


def log_in(
    page: Page,
    url: str,
    path: str,
    name: str = OPERATOR,
    password: str = PASSWORD,
    screenshot: Path | None = None,
) -> None:
    """Open ``path``, which sends to the login form, log in there and land back on ``path``
    (``screenshot``: the login page is saved there first)."""
    page.goto(url + path)
    assert "/login?next=" in page.url
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(url + path)
