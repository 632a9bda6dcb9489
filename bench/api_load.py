"""The availability API under load: wrk against the real ``parkgate dashboard`` on this machine.

    python -m bench.api_load [--lots 200] [--duration 20] [--connections 64] [--runs 2]
    parkgate bench api ...

Starts Mosquitto on a free loopback port, publishes ``--lots`` retained ``LotAvailability``
messages (a city of lots around Wuhan, as the collector would), starts ``parkgate dashboard`` —
the production server — on a free port and waits until its live state holds every lot. Then, per
endpoint (``/api/v1/availability`` and ``/api/v1/availability/<lot>``), a short warm-up and
``--runs`` runs of ``wrk -t2 -c64 -d20s --latency``, parsed. One JSON line per endpoint on stdout,
the medians of the runs beside each run's own figures and the 1-minute load average of the
machine when it started (this machine is shared: a busy neighbour shows there)::

    {"endpoint": "/api/v1/availability", "requests_per_s": 9120.4, "p50_ms": 6.1, "p99_ms": 14.9,
     "errors": 0, "server": "dashboard", "bytes": 61234, "runs": [{...}, {...}]}

``errors`` counts wrk's socket errors (connect, read, write, timeout) and non-2xx/3xx answers.
``--server`` picks other ways to serve the same app, to compare them with the shipped one (they
are run the same way; see :data:`SERVERS`). Everything runs on loopback, is bounded in time and
stops by itself; Ctrl-C stops the children too. Timing is reported, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parkgate.args import positive, whole

if TYPE_CHECKING:  # the rest is imported where used: `parkgate --help` builds this module's options
    from parkgate.settings import MqttSettings
    from protocol import LotAvailability

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
CENTRE = (30.5928, 114.3055)  # Wuhan
WARMUP_S = 3
# Ways to serve the same dashboard app, to compare with the shipped command ("dashboard"): argv
# after the Python interpreter, {config} and {port} filled in. The gunicorn ones need gunicorn,
# which is not a dependency (pip install gunicorn); gthread workers, since a live page holds a thread.
_GUNICORN = [
    "-m",
    "gunicorn",
    "-k",
    "gthread",
    "-b",
    "127.0.0.1:{port}",
    "--env",
    "PARKGATE_BENCH_CONFIG={config}",
]
SERVERS: dict[str, list[str]] = {
    # waitress whose I/O thread answers plain availability reads from their bytes (dashboard/api.py)
    "dashboard": ["-m", "parkgate", "dashboard", "--config", "{config}"],
    # stock waitress, 16 threads: the reads answered from their bytes by the WSGI layer, on a worker
    "waitress-workers": ["-m", "bench.api_load", "--serve", "waitress", "--threads", "16", "--config", "{config}"],
    "waitress-workers-4": ["-m", "bench.api_load", "--serve", "waitress", "--threads", "4", "--config", "{config}"],
    # stock waitress, 16 threads, no WSGI layer: every read through Flask (its views use the same bytes)
    "waitress-flask": ["-m", "bench.api_load", "--serve", "waitress-flask", "--threads", "16", "--config", "{config}"],
    "gunicorn-2x16": [*_GUNICORN, "-w", "2", "--threads", "16", "bench.api_load:wsgi_app()"],
    "gunicorn-3x4": [*_GUNICORN, "-w", "3", "--threads", "4", "bench.api_load:wsgi_app()"],
}  # fmt: skip


class BenchError(RuntimeError):
    """The benchmark could not run (wrk missing, the dashboard did not come up, ...)."""


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    load_1m: float
    server_cpu_us_per_request: float | None = None  # the server's CPU time (all its processes) per request


# -- a city of lots ------------------------------------------------------------------------------
def make_lots(count: int) -> list[LotAvailability]:
    """``count`` lots on a grid around the centre, with sizes and counts that vary but repeat."""
    from protocol import LotAvailability
    from protocol.messages import utc_now

    lots = []
    side = max(1, math.ceil(math.sqrt(count)))
    now = utc_now()
    for n in range(count):
        capacity = 80 + (n * 37) % 520
        occupied = (n * 53) % (capacity + 1)
        row, col = divmod(n, side)
        lots.append(
            LotAvailability(
                lot_id=f"L{n + 1:04d}", name=f"停车场 {n + 1} 号", capacity=capacity, occupied=occupied,
                free=capacity - occupied, ts=now, last_event_ts=now - timedelta(seconds=n % 90),
                data_age_s=float(n % 90), stale_after_s=120.0,
                lat=round(CENTRE[0] + (row - side / 2) * 0.004, 6),
                lon=round(CENTRE[1] + (col - side / 2) * 0.004, 6),
            )
        )  # fmt: skip
    return lots


def publish_lots(settings: MqttSettings, lots: Sequence[LotAvailability]) -> None:
    """Each lot's availability as a retained message, as the collector publishes it."""
    from parkgate.mqtt import make_client
    from protocol import Topics, encode

    topics = Topics(settings.topic_root)
    client = make_client(settings, f"bench-api-{os.getpid()}")
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        infos = [
            client.publish(topics.lot_availability(x.lot_id), encode(x), qos=1, retain=True) for x in lots
        ]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


# -- wrk -----------------------------------------------------------------------------------------
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not found:
        raise BenchError(f"wrk printed a latency I cannot read: {text!r}")
    return float(found.group(1)) * _UNITS_MS[found.group(2)]


def parse_wrk(output: str, load_1m: float = 0.0) -> WrkResult:
    """Requests/s, p50, p99 and errors from ``wrk --latency`` output."""
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    if not (rate and p50 and p99 and total):
        raise BenchError(f"wrk output without rate or latency distribution:\n{output}")
    errors = 0
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sockets:
        errors += sum(int(x) for x in sockets.groups())
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if bad:
        errors += int(bad.group(1))
    return WrkResult(
        requests_per_s=float(rate.group(1)), p50_ms=_ms(p50.group(1)), p99_ms=_ms(p99.group(1)),
        errors=errors, requests=int(total.group(1)), load_1m=load_1m,
    )  # fmt: skip


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    return found


def cpu_seconds(root: int) -> float:
    """User + system CPU time of process ``root`` and its children (gunicorn's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid, ppid = int(stat.parent.name), int(fields[1])
            if root in (pid, ppid):
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_wrk(
    url: str, *, duration: float, connections: int, threads: int, server: int | None = None
) -> WrkResult:
    load = os.getloadavg()[0]
    cpu_before = cpu_seconds(server) if server else 0.0
    args = [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", url]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration + 30:.0f} s") from None
    if done.returncode != 0:
        raise BenchError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    result = parse_wrk(done.stdout, load)
    if server and result.requests:
        used = cpu_seconds(server) - cpu_before
        result = replace(result, server_cpu_us_per_request=round(used / result.requests * 1e6, 1))
    return result


# -- the server under test -----------------------------------------------------------------------
def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read()
        return body


@contextlib.contextmanager
def serving(server: str, config: Path, port: int, log: Path, lots: int) -> Iterator[int]:
    """The dashboard served by ``server`` (a key of SERVERS) until the block ends."""
    from parkgate.broker import die_with_parent, stop_process, wait_for_port

    argv = [sys.executable] + [a.format(config=config, port=port) for a in SERVERS[server]]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=out, start_new_session=True, preexec_fn=die_with_parent
        )
    try:
        if not wait_for_port(HOST, port, 30):
            raise BenchError(
                f"{server} did not listen on {HOST}:{port}: {log.read_text(errors='replace')[-2000:]}"
            )
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError, ValueError):
                if len(json.loads(_get(f"http://{HOST}:{port}/api/v1/availability"))["lots"]) >= lots:
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"{server} did not get all {lots} lots from the broker within 30 s")
            time.sleep(0.2)
        yield proc.pid
    finally:
        stop_process(proc, timeout=15)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def measure(
    base: str, path: str, *, duration: float, connections: int, threads: int, runs: int, server: int
) -> dict[str, Any]:
    url = base + path
    run_wrk(url, duration=WARMUP_S, connections=connections, threads=threads)
    results = [
        run_wrk(url, duration=duration, connections=connections, threads=threads, server=server)
        for _ in range(runs)
    ]
    return {
        "endpoint": path,
        "requests_per_s": _median([r.requests_per_s for r in results]),
        "p50_ms": _median([r.p50_ms for r in results]),
        "p99_ms": _median([r.p99_ms for r in results]),
        "errors": sum(r.errors for r in results),
        "server_cpu_us_per_request": _median([r.server_cpu_us_per_request or 0.0 for r in results]),
        "bytes": len(_get(url)),
        "runs": [asdict(r) for r in results],
    }


def run(
    *,
    lots: int = 200,
    duration: float = 20,
    connections: int = 64,
    threads: int = 2,
    runs: int = 2,
    servers: Sequence[str] = ("dashboard",),
) -> int:
    from parkgate.broker import Mosquitto, free_port
    from parkgate.demo import write_toml
    from parkgate.settings import MqttSettings

    wrk_binary()
    for server in servers:
        if "gunicorn" in SERVERS[server] and importlib.util.find_spec("gunicorn") is None:
            raise BenchError(f"{server} needs gunicorn, which is not installed (pip install gunicorn)")
    with tempfile.TemporaryDirectory(prefix="parkgate-api-load-") as tmp:
        work = Path(tmp)
        with Mosquitto(work / "broker") as broker:
            mqtt = {"host": HOST, "port": broker.port, "topic_root": "bench"}
            city = make_lots(lots)
            publish_lots(MqttSettings(**mqtt), city)
            for server in servers:
                port = free_port(HOST)
                config = write_toml(work / f"{server}.toml", {"host": HOST, "port": port, "mqtt": mqtt})
                print(f"[bench api] {server} on port {port}, {lots} lots", file=sys.stderr, flush=True)
                with serving(server, config, port, work / f"{server}.log", lots) as pid:
                    base = f"http://{HOST}:{port}"
                    for path in ("/api/v1/availability", f"/api/v1/availability/{city[lots // 2].lot_id}"):
                        line = measure(
                            base, path, duration=duration, connections=connections, threads=threads, runs=runs,
                            server=pid,
                        )  # fmt: skip
                        print(json.dumps({**line, "server": server, "lots": lots}), flush=True)
    return 0


# -- the other servers, for comparison -----------------------------------------------------------
def wsgi_app() -> Any:
    """The dashboard app for gunicorn (config file in $PARKGATE_BENCH_CONFIG)."""
    from dashboard import create_app
    from dashboard.config import DashboardConfig
    from parkgate.settings import load_config

    return create_app({"PARKGATE": load_config(DashboardConfig, Path(os.environ["PARKGATE_BENCH_CONFIG"]))})


def serve(kind: str, config: Path, threads: int) -> int:
    """Serve the dashboard app on stock waitress (``waitress``: with the availability WSGI layer;
    ``waitress-flask``: without it), only for the comparisons in SERVERS."""
    from waitress import serve as waitress_serve

    from dashboard import create_app
    from dashboard.api import FastAvailability
    from dashboard.config import DashboardConfig
    from parkgate.settings import load_config

    cfg = load_config(DashboardConfig, config)
    app = create_app({"PARKGATE": cfg})
    if kind == "waitress-flask":
        fast = app.wsgi_app
        assert isinstance(fast, FastAvailability)
        app.wsgi_app = fast.app  # type: ignore[method-assign,assignment]
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # a line per queued request otherwise
    waitress_serve(app, host=cfg.host, port=cfg.port, threads=threads, ident="parkgate")
    return 0


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="python -m bench.api_load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--lots", type=whole(1), default=200, help="lots in the live state (default 200)")
    parser.add_argument("--duration", type=positive, default=20, help="seconds per wrk run (default 20)")
    parser.add_argument("--connections", type=whole(1), default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=whole(1), default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--runs", type=whole(1), default=2, help="runs per endpoint; medians reported (default 2)"
    )
    parser.add_argument(
        "--server",
        action="append",
        choices=sorted(SERVERS),
        help="how to serve (repeatable; default dashboard)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["--serve"]:
        serve_args = argparse.ArgumentParser()
        serve_args.add_argument("--serve", required=True)
        serve_args.add_argument("--threads", type=int, default=16)
        serve_args.add_argument("--config", type=Path, required=True)
        got = serve_args.parse_args(raw)
        return serve(got.serve, got.config, got.threads)
    args = build_parser().parse_args(raw)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return run_args(args, "bench api")


def run_args(args: argparse.Namespace, prog: str) -> int:
    """:func:`run` with parsed arguments (this module's or ``parkgate bench api``'s); errors are
    printed as ``PROG: ...``, exit 1."""
    try:
        return run(
            lots=args.lots, duration=args.duration, connections=args.connections, threads=args.threads,
            runs=args.runs, servers=args.server or ["dashboard"],
        )  # fmt: skip
    except BenchError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
