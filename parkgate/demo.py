"""``parkgate demo``: the whole system on one machine, as separate processes.

Broker (Mosquitto, private config, free loopback port) -> collector -> dashboard, and per lot
an entry gate and an exit gate running the real edge pipeline on simulated pins, fed with
generated camera frames of cars (or real photos). The exit gate of a lot shares its entry
gate's plate seed, so the cars that entered are the cars that leave.

The dashboard shares the collector's database, where the demo makes an ``admin`` operator with a
new random password each run, printed on stderr (stdout keeps its one ``dashboard:`` line).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from parkgate.broker import Mosquitto, die_with_parent, free_port, wait_for_port
from parkgate.mqtt import wait_collectors_online
from parkgate.services import stop_on_signals
from parkgate.settings import MqttSettings

logger = logging.getLogger(__name__)

LOTS = [
    ("L01", "江汉路停车场", 30, (30.5800, 114.2890)),
    ("L02", "汉街地下停车场", 20, (30.5560, 114.3420)),
    ("L03", "光谷广场停车场", 12, (30.5050, 114.3990)),
    ("L04", "武汉站东广场停车场", 40, (30.6070, 114.4240)),
    ("L05", "楚河汉街P2", 16, (30.5570, 114.3380)),
    ("L06", "汉口火车站停车场", 50, (30.6180, 114.2530)),
    ("L07", "黄鹤楼景区停车场", 24, (30.5440, 114.3030)),
    ("L08", "武汉天地停车场", 18, (30.6040, 114.3080)),
]
ARROWS = ["left", "up", "right"]


def _toml(value: Any) -> str:
    """A minimal TOML writer for the generated configs (strings, numbers, bools, lists, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    lines = [f"{k} = {_toml(v)}" for k, v in data.items() if not isinstance(v, dict) and not _is_tables(v)]
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]"] + [f"{k} = {_toml(v)}" for k, v in value.items()]
        elif _is_tables(value):
            for table in value:
                lines += ["", f"[[{key}]]"] + [f"{k} = {_toml(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def demo_database(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'events.sqlite'}"


def demo_admin(database: str, name: str = "admin") -> str:
    """Make (or re-key) the demo's admin account; returns its new random password."""
    from dashboard.users import UserExists, UserStore

    password = secrets.token_urlsafe(12)
    store = UserStore(database)  # also brings the new database's schema up to date
    try:
        try:
            store.add_user(name, password, "admin")
            store.audit("demo", "user.add", target=name, detail="role=admin lots=* stations=*")
        except UserExists:
            store.set_password(name, password)
            store.audit("demo", "user.passwd", target=name)
    finally:
        store.close()
    return password


def demo_configs(
    workdir: Path,
    mqtt: dict[str, Any],
    *,
    lots: int,
    dashboard_port: int,
    interval: float,
    photos: Path | None,
) -> dict[str, Path]:
    """Write every service's config into ``workdir``; returns name -> config path."""
    chosen = LOTS[:lots]
    configs = {
        "collector": write_toml(
            workdir / "collector.toml",
            {
                "name": "demo",
                "database": demo_database(workdir),
                "mqtt": mqtt,
                "lots": [
                    {"id": i, "name": n, "capacity": c, "lat": lat, "lon": lon}
                    for i, n, c, (lat, lon) in chosen
                ],
                "screens": [
                    {
                        "id": "S01",
                        "name": "解放大道路口诱导屏",
                        "lots": [
                            {"lot_id": i, "arrow": ARROWS[k % 3]} for k, (i, *_r) in enumerate(chosen[:3])
                        ],
                    },
                    {
                        "id": "S02",
                        "name": "单停车场入口屏",
                        "lots": [{"lot_id": chosen[0][0], "arrow": "right"}],
                    },
                ],
            },
        ),
        "dashboard": write_toml(
            workdir / "dashboard.toml",
            {
                "host": "127.0.0.1",
                "port": dashboard_port,
                "database": demo_database(workdir),
                "collector_config": workdir / "collector.toml",
                "secret_key_file": workdir / "dashboard-secret.key",
                "mqtt": mqtt,
            },
        ),
    }
    for k, (lot_id, _name, capacity, _pos) in enumerate(chosen):
        for direction, suffix in (("entry", "in"), ("exit", "out")):
            gate_id = f"{lot_id}-{suffix}"
            # Exits start once the lot has had time to fill and run a little slower than entries,
            # so occupancy swings and small lots reach "full" (with real photos, the exit gate sees
            # the same cars: started together, every exit would follow its entry within a second).
            exit_delay = capacity * interval * 0.6 if not photos else 4 * interval
            pace = {
                "interval_s": interval if direction == "entry" else interval * 1.4,
                "start_delay_s": 0.0 if direction == "entry" else exit_delay,
            }
            camera: dict[str, Any]
            if photos:
                camera = {"kind": "files", "path": photos, "repeat": True, **pace}
            else:
                camera = {"kind": "synthetic", "seed": 1000 + k, **pace}
            configs[gate_id] = write_toml(
                workdir / f"{gate_id}.toml",
                {
                    "gate_id": gate_id,
                    "lot_id": lot_id,
                    "direction": direction,
                    "outbox": workdir / f"{gate_id}.outbox.sqlite",
                    "mqtt": mqtt,
                    "camera": camera,
                    "ocr": {"threads": 1},
                    "policy": {"cooldown_s": 0.0},
                    "gate": {"travel_s": 1.0, "close_delay_s": 0.5, "open_timeout_s": 10.0},
                    "simulation": {"enabled": True, "drive_s": 1.0},
                },
            )
    return configs


class ChildDied(RuntimeError):
    """A demo child process ended while the demo was starting."""


class Children:
    """The demo's child processes, stopped in reverse start order."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``parkgate ARGS`` in its own session, so a terminal's Ctrl-C reaches only the demo,
        which then stops the children in order; each child dies with the demo (PDEATHSIG)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "parkgate", *args],
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        dead = self.dead()
        if dead:
            raise ChildDied(f"child process ended: {dead}")

    def dead(self) -> list[tuple[str, int]]:
        return [(name, p.returncode) for name, p in self.procs if p.poll() is not None]

    def stop(self, timeout: float = 10.0) -> None:
        """Gates first (their last events drain to the broker), then dashboard and collector."""
        gates = [(n, p) for n, p in self.procs if n not in ("collector", "dashboard")]
        services = [(n, p) for n, p in reversed(self.procs) if n in ("collector", "dashboard")]
        for group in (gates, services):
            for _name, proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for name, proc in group:
                try:
                    proc.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    logger.warning("%s did not stop within %.0f s; killing it", name, timeout)
                    proc.kill()
                    proc.wait()


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def run_demo(args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    if args.photos and not args.photos.is_dir():
        print(f"parkgate demo: --photos {args.photos}: not a folder", file=sys.stderr)
        return 2
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="parkgate-demo-")
    workdir = Path(args.workdir or tmp.name).resolve()  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    broker = None
    children = Children()
    try:
        if args.broker:
            host, _, port = args.broker.rpartition(":")
            mqtt = {"host": host or "127.0.0.1", "port": int(port)}
        else:
            broker = Mosquitto(workdir / "broker").start()
            mqtt = {"host": broker.host, "port": broker.port}
        port = args.port or free_port()
        configs = demo_configs(
            workdir, mqtt, lots=args.lots, dashboard_port=port, interval=args.interval, photos=args.photos
        )
        password = demo_admin(demo_database(workdir))
        since = datetime.now(UTC)
        children.spawn("collector", "collector", "--config", str(configs.pop("collector")))
        children.spawn("dashboard", "dashboard", "--config", str(configs.pop("dashboard")))
        # Gates start once the collector listens: its session is new, so events sent before it
        # subscribed would wait for the gates' own resend (10 s).
        if not wait_collectors_online(
            MqttSettings(**mqtt), ["demo"], since=since, timeout=60, alive=children.check_alive
        ):
            logger.error("collector did not come up")
            return 1
        for gate_id, path in configs.items():
            children.spawn(gate_id, "edge", "--config", str(path))
        if not (wait_for_port("127.0.0.1", port, 30) and _wait_http(f"http://127.0.0.1:{port}/healthz", 30)):
            logger.error("dashboard did not come up")
            return 1
        print(f"dashboard: http://127.0.0.1:{port}/", flush=True)
        print(
            f"operator login: http://127.0.0.1:{port}/login  user: admin  password: {password}",
            file=sys.stderr,
            flush=True,
        )
        logger.info("%d gates running; configs and logs in %s; Ctrl-C stops", len(configs), workdir)
        while not stop.wait(1.0):
            children.check_alive()
        return 0
    except ChildDied as err:
        logger.error("%s; stopping the demo", err)
        return 1
    finally:
        children.stop()
        if broker:
            broker.stop()
        if tmp:
            tmp.cleanup()
        logger.info("demo stopped")
