"""sd_notify messages reach a real AF_UNIX datagram socket, as systemd's would; nothing happens
outside systemd. The units in deploy/systemd/ pass systemd's own checker and run real commands."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config import EdgeConfig
from parkgate import systemd
from parkgate.cli import build_parser
from parkgate.settings import parse_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = DEPLOY / "systemd"
INSTALLED = "/opt/parkgate/.venv/bin/parkgate"


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    with sock:
        yield sock


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode("utf-8").split("\n")


def test_ready_watchdog_status_and_stopping_reach_the_socket(notify_socket: socket.socket) -> None:
    assert systemd.notify_ready("gate L01-in:\n waiting for cars")
    assert received(notify_socket) == ["READY=1", "STATUS=gate L01-in: waiting for cars"]
    assert systemd.watchdog_ping()
    assert received(notify_socket) == ["WATCHDOG=1"]
    assert systemd.notify_status("3 events stored")
    assert received(notify_socket) == ["STATUS=3 events stored"]
    assert systemd.notify_stopping()
    assert received(notify_socket) == ["STOPPING=1"]


def test_abstract_socket_name(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"parkgate-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.watchdog_ping()
        assert received(sock) == ["WATCHDOG=1"]


def test_nothing_happens_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.notify_ready()
    assert not systemd.watchdog_ping()
    assert not systemd.notify_stopping()


def test_a_socket_that_is_gone_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    monkeypatch.setattr(systemd, "_warned", False)
    assert not systemd.watchdog_ping()
    assert not systemd.watchdog_ping()
    assert [r.getMessage() for r in caplog.records if r.name == "parkgate.systemd"] == [
        f"cannot notify systemd at {tmp_path / 'nobody-listens'}: [Errno 2] No such file or directory"
    ]


@pytest.mark.parametrize("field", ["READY", "STATUS=two\nlines"])
def test_malformed_fields_are_a_caller_bug(field: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with pytest.raises(ValueError, match="KEY=VALUE on one line"):
        systemd.notify(field)


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [("30000000", "self", 15.0), ("30000000", None, 15.0), ("30000000", "1", None), (None, None, None)],
)
def test_watchdog_interval_is_half_of_watchdog_sec(
    usec: str | None, pid: str | None, expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (
        ("WATCHDOG_USEC", usec),
        ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid),
    ):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert systemd.watchdog_interval() == expected


def unit_settings(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


@pytest.mark.parametrize("name", ["edge", "collector", "dashboard"])
def test_unit_is_valid_and_runs_a_real_command(name: str, tmp_path: Path) -> None:
    text = (UNITS / f"parkgate-{name}.service").read_text(encoding="utf-8")
    unit = unit_settings(text)
    assert unit["Type"] == "notify" and unit["WatchdogSec"] == "30" and unit["Restart"] == "always"
    assert unit["RestartPreventExitStatus"] == "78"  # a bad config is not retried (cli.EX_CONFIG)
    command = shlex.split(unit["ExecStart"])
    assert command[0] == INSTALLED
    args = build_parser().parse_args(command[1:])
    assert args.command == name and str(args.config) == f"/etc/parkgate/{name}.toml"

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    # Verified with this checkout's own parkgate script in place of the installed one.
    here = Path(sys.executable).parent / "parkgate"
    copy = tmp_path / f"parkgate-{name}.service"
    copy.write_text(text.replace(INSTALLED, str(here)), encoding="utf-8")
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_pi_guide_config_is_a_valid_edge_config() -> None:
    guide = (DEPLOY / "raspberry-pi.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(.*?)```", guide, re.S)
    assert block, "no TOML example in deploy/raspberry-pi.md"
    cfg = parse_config(EdgeConfig, tomllib.loads(block.group(1)), "deploy/raspberry-pi.md")
    assert cfg.mqtt.username == cfg.gate_id and cfg.mqtt.tls_ca and cfg.mqtt.port == 8883
    assert str(cfg.outbox).startswith("/var/lib/parkgate/")  # the unit's StateDirectory
