"""``parkgate bench faults``: kill things for real and count what reached the event store.

Each scenario starts real processes: Mosquitto (private config, persistence on), the collector
(``parkgate collector``, SQLite) and edge nodes (``parkgate edge`` in simulation mode, with a
synthetic camera that does not render and ``ocr.engine = "truth"``: reading is not the subject
here, delivery is). Edges reach the broker through a TCP proxy the benchmark can cut. Then it
breaks something, again and again, while events flow; restores it; waits until every edge's
outbox is confirmed empty; and compares each gate's outbox sequence numbers with the store:

    {"scenario", "runs", "events", "stored", "lost", "duplicated", "occupancy_error", "seconds",
     "write_rate", "drain_rate"}

``events`` is every sequence number the edges handed out; ``lost`` those never stored;
``duplicated`` stored rows beyond one per event; ``occupancy_error`` the lot count minus the
events stored (each event is an admitted entry, so any double count shows here).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parkgate.broker import Mosquitto, die_with_parent, free_port, stop_process
from parkgate.demo import write_toml

logger = logging.getLogger(__name__)

SCENARIOS = ("broker_kill", "edge_kill", "network_cut", "collector_kill")


class TcpProxy:
    """A loopback TCP relay to the broker that can be cut (connections dropped, port refusing)."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones, as an unreachable broker would."""
        server, self._server = self._server, None
        if server:
            server.close()
        with self._lock:
            for conn in self._conns:
                self._close(conn)
            self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(src)
            self._close(dst)

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@dataclass
class Rig:
    """The processes of one scenario."""

    workdir: Path
    gates: int
    rate: float
    broker: Mosquitto = field(init=False)
    proxy: TcpProxy = field(init=False)
    collector: subprocess.Popen[bytes] | None = None
    edges: dict[str, subprocess.Popen[bytes] | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.broker = Mosquitto(self.workdir / "broker")
        self.log = (self.workdir / "processes.log").open("ab")

    def start(self) -> None:
        self.broker.start()
        self.proxy = TcpProxy(self.broker.port)
        self.proxy.start()
        write_toml(
            self.workdir / "collector.toml",
            {
                "name": "bench",
                "database": f"sqlite:///{self.workdir / 'events.sqlite'}",
                "mqtt": {"host": "127.0.0.1", "port": self.broker.port},
                "lots": [{"id": "L1", "name": "bench lot", "capacity": 100_000}],
            },
        )
        self.start_collector()
        for n in range(self.gates):
            gate_id = f"G{n + 1}"
            camera = {"kind": "synthetic", "seed": n, "render": False, "interval_s": 1 / self.rate}
            config = {
                "gate_id": gate_id,
                "lot_id": "L1",
                "direction": "entry",
                "outbox": self.outbox(gate_id),
                "mqtt": {"host": "127.0.0.1", "port": self.proxy.port},
                "camera": camera,
                "ocr": {"engine": "truth"},
                "policy": {"cooldown_s": 0.0},
                "simulation": {"enabled": True, "vehicles": False},
                "link": {"confirm_timeout_s": 3.0, "heartbeat_s": 5.0, "drain_rate": 2000.0},
            }
            write_toml(self.workdir / f"{gate_id}.toml", config)
            # the same gate with no new vehicles: it only drains its outbox
            write_toml(
                self.workdir / f"{gate_id}.drain.toml", config | {"camera": camera | {"start_delay_s": 3600}}
            )
            self.start_edge(gate_id)

    def outbox(self, gate_id: str) -> Path:
        return self.workdir / f"{gate_id}.outbox.sqlite"

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PARKGATE_LOG_LEVEL="WARNING")
        return subprocess.Popen(
            [sys.executable, "-m", "parkgate", *args], stdout=self.log, stderr=self.log, env=env,
            preexec_fn=die_with_parent,
        )  # fmt: skip

    def start_collector(self) -> None:
        self.collector = self._spawn("collector", "--config", str(self.workdir / "collector.toml"))

    def start_edge(self, gate_id: str, *, drain_only: bool = False) -> None:
        name = f"{gate_id}.drain.toml" if drain_only else f"{gate_id}.toml"
        self.edges[gate_id] = self._spawn("edge", "--config", str(self.workdir / name))

    def kill(self, proc: subprocess.Popen[bytes] | None) -> None:
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def stop_edges(self) -> None:
        """Stop generating: SIGTERM every edge (their outboxes keep whatever is unconfirmed)."""
        for proc in self.edges.values():
            if proc and proc.poll() is None:
                proc.terminate()
        for proc in self.edges.values():
            if proc:
                proc.wait(30)

    def produced(self) -> int:
        return sum(_last_seq(self.outbox(g)) for g in self.edges)

    def backlog(self) -> int:
        return sum(_backlog(self.outbox(g)) for g in self.edges)

    def close(self) -> None:
        for proc in [*self.edges.values(), self.collector]:
            stop_process(proc, 15)
        self.proxy.cut()
        self.broker.stop()
        self.log.close()


def _last_seq(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        except sqlite3.OperationalError:  # an edge (re)starting has made the file, not yet its tables
            return 0
    return int(row[0]) if row else 0


def _backlog(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except sqlite3.OperationalError:  # made, not yet its tables (see _last_seq)
            return 0


def _epoch(path: Path) -> str:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return str(db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])


def tally(rig: Rig) -> dict[str, int]:
    """Compare every gate's sequence numbers with the store."""
    events = lost = duplicated = stored = 0
    with sqlite3.connect(f"file:{rig.workdir / 'events.sqlite'}?mode=ro", uri=True) as db:
        for gate_id in rig.edges:
            last, epoch = _last_seq(rig.outbox(gate_id)), _epoch(rig.outbox(gate_id))
            rows = db.execute(
                "SELECT seq, COUNT(*) FROM events WHERE gate_id = ? AND epoch = ? GROUP BY seq",
                (gate_id, epoch),
            ).fetchall()
            seen = {seq: n for seq, n in rows}
            events += last
            stored += sum(seen.values())
            lost += sum(1 for seq in range(1, last + 1) if seq not in seen)
            duplicated += sum(n - 1 for n in seen.values())
        occupied = db.execute("SELECT occupied FROM lots WHERE id = 'L1'").fetchone()[0]
    return {
        "events": events,
        "stored": stored,
        "lost": lost,
        "duplicated": duplicated,
        "occupancy_error": occupied - (stored - duplicated),
    }


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _progress(scenario: str, run: int, runs: int, rig: Rig) -> None:
    print(
        f"[bench faults] {scenario}: {run}/{runs}, {rig.produced()} events so far",
        file=sys.stderr,
        flush=True,
    )


def run_scenario(
    scenario: str, *, runs: int, gates: int, rate: float, cut_events: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix=f"parkgate-faults-{scenario}-") as tmp:
        rig = Rig(Path(tmp), gates=gates, rate=rate)
        started = time.monotonic()
        rig.start()
        try:
            _wait(lambda: rig.produced() > 0, 60)
            if scenario == "network_cut":
                runs = 1
                rig.proxy.cut()
                before = rig.produced()
                _wait(lambda: rig.produced() - before >= cut_events, cut_events / (rate * gates) * 3 + 30)
                rig.proxy.start()
            for run in range(1, runs + 1 if scenario != "network_cut" else 1):
                time.sleep(rng.uniform(0.5, 2.0))
                if scenario == "broker_kill":
                    rig.broker.kill()
                    time.sleep(rng.uniform(0.1, 1.0))
                    rig.broker.start()
                elif scenario == "collector_kill":
                    rig.kill(rig.collector)
                    time.sleep(rng.uniform(0.1, 1.0))
                    rig.start_collector()
                elif scenario == "edge_kill":
                    gate_id = rng.choice(list(rig.edges))
                    rig.kill(rig.edges[gate_id])
                    rig.start_edge(gate_id)
                if run % 5 == 0 or run == runs:
                    _progress(scenario, run, runs, rig)
            time.sleep(1.0)
            rig.stop_edges()  # no more events; what is unconfirmed stays in the outboxes
            backlog = rig.backlog()
            drain_started = time.monotonic()
            for gate_id in rig.edges:
                rig.start_edge(gate_id, drain_only=True)
            drained = _wait(lambda: rig.backlog() == 0, 300)
            drain_seconds = time.monotonic() - drain_started
            rig.stop_edges()
            result: dict[str, Any] = dict(tally(rig))
            result.update(
                scenario=scenario, runs=runs, seconds=round(time.monotonic() - started, 1), drained=drained,
                backlog_at_stop=backlog, drain_rate=round(backlog / drain_seconds, 1) if backlog else None,
            )  # fmt: skip
            return result
        finally:
            rig.close()


def outbox_write_rate(events: int = 2000) -> float:
    """Events per second the outbox commits durably (WAL, synchronous=FULL) on this machine."""
    from edge.outbox import Outbox

    with tempfile.TemporaryDirectory() as tmp:
        box = Outbox(Path(tmp) / "o.sqlite")
        started = time.perf_counter()
        for _ in range(events):
            box.append(lambda seq: (f"bench-{seq:012d}-xxxxxxxx", "t", b"x" * 300))
        rate = events / (time.perf_counter() - started)
        box.close()
    return round(rate, 1)


def run(
    scenarios: list[str], *, runs: dict[str, int], gates: int, rate: float, cut_events: int, seed: int
) -> int:
    write_rate = outbox_write_rate()
    print(json.dumps({"outbox_write_rate": write_rate}), flush=True)
    failed = False
    for scenario in scenarios:
        result = run_scenario(
            scenario, runs=runs[scenario], gates=gates, rate=rate, cut_events=cut_events, seed=seed
        )
        result["write_rate"] = write_rate
        failed |= bool(result["lost"] or result["duplicated"] or result["occupancy_error"])
        print(json.dumps(result), flush=True)
    return 1 if failed else 0
